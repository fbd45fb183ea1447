"""The interface's words in English and German; the language comes from the `lang` cookie (the switch links),
else the browser's Accept-Language, else English."""
from __future__ import annotations

from flask import request

LANGUAGES = ("en", "de")
# key -> (English, German)
STRINGS: dict[str, tuple[str, str]] = {
    "title": ("Social care workspace", "Social-Care-Arbeitsplatz"),
    "login": ("Log in", "Anmelden"),
    "logout": ("Log out", "Abmelden"),
    "username": ("User name", "Benutzername"),
    "password": ("Password", "Passwort"),
    "login_wrong": ("Wrong user name or password.", "Benutzername oder Passwort falsch."),
    "login_wait": ("Too many failed logins. Please wait a few minutes and try again.",
                   "Zu viele fehlgeschlagene Anmeldungen. Bitte warte einige Minuten und versuche es erneut."),
    "login_proxy": ("Logins go through the single sign-on of your organisation.",
                    "Die Anmeldung läuft über das Single Sign-on deiner Organisation."),
    "queue": ("Queue", "Warteschlange"),
    "supervisor": ("Service level", "Service-Level"),
    "search": ("Search", "Suche"),
    "signed_in_as": ("Signed in as", "Angemeldet als"),
    "filter": ("Filter", "Filtern"),
    "all": ("all", "alle"),
    "channel": ("Channel", "Kanal"),
    "language": ("Language", "Sprache"),
    "topic": ("Topic", "Thema"),
    "intent": ("Intent", "Anliegen"),
    "sentiment": ("Sentiment", "Stimmung"),
    "source": ("Source", "Quelle"),
    "priority": ("Priority", "Priorität"),
    "due": ("Due", "Fällig"),
    "status": ("Status", "Status"),
    "assignee": ("Agent", "Bearbeiter"),
    "mine": ("Only mine", "Nur meine"),
    "open_cases": ("open cases", "offene Fälle"),
    "no_cases": ("No open cases.", "Keine offenen Fälle."),
    "overdue": ("overdue", "überfällig"),
    "case": ("Case", "Fall"),
    "customer": ("Customer", "Kunde"),
    "brand": ("Brand", "Marke"),
    "reasons": ("Routing reasons", "Gründe der Einstufung"),
    "pii_types": ("Personal data found", "Gefundene persönliche Daten"),
    "none": ("none", "keine"),
    "raw_text": ("Original text (agents only)", "Originaltext (nur für Agenten)"),
    "redacted_text": ("Redacted text", "Geschwärzter Text"),
    "text_gone": ("The author deleted this post.", "Der Autor hat diesen Beitrag gelöscht."),
    "helpdesk_answer": ("Answered in the helpdesk (the text is there).", "Im Helpdesk beantwortet (der Text steht dort)."),
    "claim": ("Claim", "Übernehmen"),
    "reply": ("Reply", "Antworten"),
    "reply_text": ("Reply text", "Antworttext"),
    "send_reply": ("Send reply", "Antwort senden"),
    "private": ("Continue in private channel", "Im privaten Kanal fortsetzen"),
    "close": ("Close case", "Fall schließen"),
    "relabel": ("Correct the labels", "Labels korrigieren"),
    "keep": ("keep", "beibehalten"),
    "save_labels": ("Save labels", "Labels speichern"),
    "claimed": ("Claimed.", "Übernommen."),
    "replied": ("Reply sent.", "Antwort gesendet."),
    "marked_private": ("Marked: continue in a private channel.", "Markiert: im privaten Kanal fortsetzen."),
    "closed": ("Case closed.", "Fall geschlossen."),
    "relabelled": ("Labels corrected (exported as training data).",
                   "Labels korrigiert (werden als Trainingsdaten exportiert)."),
    "no_reply_sources": ("Replying needs the sources file: start triage web with --sources.",
                         "Antworten braucht die Quellendatei: triage web mit --sources starten."),
    "open_per_queue": ("Open and overdue cases per queue", "Offene und überfällige Fälle je Warteschlange"),
    "unanswered_rate": ("Unanswered by the due time", "Bis zur Frist unbeantwortet"),
    "frt": ("First response p50 / p90", "Erste Antwort p50 / p90"),
    "sla_over_time": ("Share answered within SLA, per day", "Anteil innerhalb der Frist beantwortet, je Tag"),
    "sla_by_channel": ("Share answered within SLA, per channel", "Anteil innerhalb der Frist, je Kanal"),
    "volume": ("Volume and negative share per hour (last 48 h), alert spikes marked",
               "Volumen und Anteil negativ je Stunde (48 h), Alarmspitzen markiert"),
    "alerts": ("Alerts", "Alarme"),
    "no_alerts": ("No spikes.", "Keine Spitzen."),
    "load": ("Agents' load (open cases held)", "Last der Agenten (gehaltene offene Fälle)"),
    "query": ("Search words", "Suchbegriffe"),
    "from": ("From", "Von"),
    "to": ("To", "Bis"),
    "results": ("matching posts", "passende Beiträge"),
    "trend": ("Posts per day", "Beiträge je Tag"),
    "forbidden": ("You are not allowed to see this.", "Das darfst du nicht sehen."),
    "not_found": ("Not found.", "Nicht gefunden."),
    "bad_request": ("The form was out of date or incomplete. Reload the page and try again.",
                    "Das Formular war veraltet oder unvollständig. Lade die Seite neu und versuche es erneut."),
    "error": ("Error", "Fehler"),
    "skip": ("Skip to content", "Zum Inhalt springen"),
}


def choose_language() -> str:
    chosen = request.cookies.get("lang")
    if chosen in LANGUAGES:
        return chosen
    return request.accept_languages.best_match(LANGUAGES) or "en"


def translate(key: str, language: str) -> str:
    english, german = STRINGS[key]
    return german if language == "de" else english
