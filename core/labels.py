"""The label sets the models predict and everyone else reads (routing rules, the desk, evaluation).

They live in the core because they are a contract, not a property of one training-data reader.
"""
SENTIMENT_LABELS = ["negative", "neutral", "positive"]
RELEVANCE_LABELS = ["irrelevant", "relevant"]
INTENT_LABELS = ["complaint", "question", "cancellation", "praise", "purchase_interest", "spam", "other"]
