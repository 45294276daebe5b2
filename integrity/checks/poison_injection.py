"""``poison.injection``: prompt-injection payloads planted in text.

Scraped pages and synthetic data can carry instructions aimed at the model
that will read them ("ignore all previous instructions ...", a fake system
prompt, chat-template control tokens, a note "to the AI" hidden in an HTML
comment or in invisible Unicode tag characters). Such records poison an
instruction-tuned model or a retrieval corpus. This check is precise and cheap:
a few RE2 prefilters run over each text column in C++ (pyarrow), and the
records they let through are matched against the patterns below in Python.

One finding per record; ``detail`` is ``{"matches": [...], "n_matches", "kinds"}``
where each match has ``kind``, ``field``, ``start``/``end`` (code-point offsets,
Python ``str`` indices), ``score``, ``pattern`` (which rule), ``lang`` and the
matched ``text`` (capped).

Kinds and default scores (option ``scores``; a match inside quotation marks,
i.e. text *discussing* an attack, is scored x0.75):

=========================  =====  ===========================================================
kind                       score  what
=========================  =====  ===========================================================
``instruction_override``   0.95   "ignore / disregard / forget (all) (previous | prior | above
                                  | earlier) instructions / prompts / rules", "disregard the
                                  above", "forget everything you were told", in English,
                                  German, French, Spanish, Italian, Portuguese, Dutch,
                                  Russian, Chinese, Japanese and Korean.
``hidden_instruction``     0.95   an instruction addressed to an AI/assistant/model inside an
                                  HTML comment, a hidden HTML element (``display:none``,
                                  ``visibility:hidden``, zero font size) or Unicode tag
                                  characters (decoded: ``hidden_text``).
``chat_control_token``     0.9    chat-template control tokens in plain text:
                                  ``<|im_start|>``, ``<|system|>``, ``<|eot_id|>``,
                                  ``[INST]``, ``<<SYS>>``, ``<start_of_turn>``, ...
``system_prompt_marker``   0.85   "BEGIN SYSTEM PROMPT", "new system prompt:", "system
                                  override", ``<system>`` tags.
``role_hijack``            0.85   "you are now DAN / unrestricted / jailbroken / in developer
                                  mode", "Do Anything Now", "developer mode enabled",
                                  "from now on you will answer without restrictions".
``prompt_exfiltration``    0.8    "reveal / print / repeat your system prompt / initial
                                  instructions", "repeat the words above starting with".
``role_header``            0.6    a line starting with a system-role header (``### System:``,
                                  ``SYSTEM:``, ``System prompt:``, ``[system]``); user/
                                  instruction/response headers are ordinary prompt
                                  formatting and are not reported.
``ai_addressed``           0.6    text speaking to an AI reader: "if you are an AI / a
                                  language model, ...", "note to the AI assistant", "AI
                                  agents reading this must ...".
=========================  =====  ===========================================================

Ordinary text about instructions ("follow the instructions in the manual",
"ignore the warning", "you are now ready to install") does not match: every
override rule needs both an override verb and a reference to earlier
instructions or to the model itself.
"""
from __future__ import annotations

import re
from collections.abc import Iterator

from pydantic import Field

from integrity.checks._text_scan import (
    RawMatch,
    ScanGroup,
    TextScanCheck,
    text_scan_options,
)

DEFAULT_SCORES = {
    "instruction_override": 0.95,
    "hidden_instruction": 0.95,
    "chat_control_token": 0.9,
    "system_prompt_marker": 0.85,
    "role_hijack": 0.85,
    "prompt_exfiltration": 0.8,
    "role_header": 0.6,
    "ai_addressed": 0.6,
}
KINDS = tuple(DEFAULT_SCORES)

_F = re.IGNORECASE | re.UNICODE

# ---------------------------------------------------------------------------
# patterns: (kind, rule name, language, compiled regex)

_PREV = r"(?:previous|prior|preceding|above|earlier|foregoing|former|initial|original|old|existing|system|developer|pre-?set)"
_INSTR = r"(?:instructions?|prompts?|directions?|directives?|rules|guidelines|guardrails|constraints|restrictions|commands?|orders|programming|context|messages|policies|polic(?:y|ies))"
_OVERRIDE_VERB = r"(?:ignore|ignoring|disregard|disregarding|forget|forgetting|override|overriding|bypass|skip|discard|drop|abandon|do\s+not\s+(?:follow|obey)|don'?t\s+(?:follow|obey)|stop\s+following)"

OVERRIDE_PATTERNS: list[tuple[str, str, str, re.Pattern]] = [
    ("instruction_override", "ignore_previous_instructions", "en", re.compile(
        rf"\b{_OVERRIDE_VERB}\s+(?:all\s+|any\s+|every\s+|each\s+)?(?:of\s+)?(?:the\s+|your\s+|my\s+|these\s+|those\s+|all\s+)?"
        rf"(?:\w+\s+){{0,2}}?{_PREV}\s+(?:\w+\s+)?{_INSTR}\b", _F)),
    ("instruction_override", "ignore_all_your_instructions", "en", re.compile(
        rf"\b{_OVERRIDE_VERB}\s+(?:all\s+(?:of\s+)?)?(?:your|the\s+model'?s|the\s+assistant'?s|the\s+ai'?s)\s+(?:\w+\s+)?{_INSTR}\b", _F)),
    ("instruction_override", "ignore_everything_above", "en", re.compile(
        r"\b(?:ignore|disregard|forget)\s+(?:all\s+|everything\s+|anything\s+)?(?:(?:that\s+)?(?:was\s+|is\s+)?"
        r"(?:said|written|stated|mentioned)\s+)?(?:the\s+)?(?:above|before\s+this|prior\s+to\s+this|previously)\b", _F)),
    ("instruction_override", "forget_what_you_were_told", "en", re.compile(
        r"\bforget\s+(?:everything|all|what(?:ever)?)\s+(?:you\s+(?:were|have\s+been|'ve\s+been)\s+(?:told|taught|instructed|trained)|you\s+know\s+about\s+your\s+(?:rules|instructions))\b", _F)),
    ("instruction_override", "new_instructions", "en", re.compile(
        r"\b(?:your\s+new\s+instructions\s+are|new\s+instructions\s*:\s*(?:you|ignore|from\s+now)|instead\s*,?\s+follow\s+these\s+(?:new\s+)?instructions)\b", _F)),
    ("instruction_override", "ignore_previous_instructions", "de", re.compile(
        r"\b(?:ignorier(?:e|en|t)?|vergiss|vergessen\s+sie|missachte(?:n)?)\s+(?:sie\s+)?(?:alle\s+)?(?:die\s+|deine\s+|ihre\s+)?"
        r"(?:vorherigen|bisherigen|vorangegangenen|obigen|vorigen|früheren|ursprünglichen)\s+(?:anweisungen|instruktionen|befehle|regeln|vorgaben)", _F)),
    ("instruction_override", "ignore_previous_instructions", "fr", re.compile(
        r"\b(?:ignore[zr]?|oublie[zr]?|ne\s+tiens\s+pas\s+compte\s+d)\s*(?:de\s+)?(?:toutes\s+)?(?:les\s+|tes\s+|vos\s+)?(?:instructions|consignes|directives|règles)\s+"
        r"(?:précédentes|antérieures|ci-dessus|initiales|d'origine)", _F)),
    ("instruction_override", "ignore_previous_instructions", "es", re.compile(
        r"\b(?:ignora|ignore|ignorad|olvida|olvide|haz\s+caso\s+omiso\s+de)\s+(?:todas\s+)?(?:las\s+|tus\s+|sus\s+)?(?:instrucciones|indicaciones|reglas|órdenes)\s+"
        r"(?:anteriores|previas|de\s+arriba|iniciales|originales)", _F)),
    ("instruction_override", "ignore_previous_instructions", "it", re.compile(
        r"\b(?:ignora|ignori|ignorate|dimentica)\s+(?:tutte\s+)?(?:le\s+)?(?:istruzioni|indicazioni|regole)\s+(?:precedenti|di\s+prima|sopra|iniziali)", _F)),
    ("instruction_override", "ignore_previous_instructions", "pt", re.compile(
        r"\b(?:ignore|ignora|ignorar|esqueça|esqueca|desconsidere)\s+(?:todas\s+)?(?:as\s+)?(?:suas\s+)?(?:instruções|instrucoes|orientações|regras)\s+"
        r"(?:anteriores|prévias|previas|acima|iniciais)", _F)),
    ("instruction_override", "ignore_previous_instructions", "nl", re.compile(
        r"\b(?:negeer|vergeet)\s+(?:alle\s+)?(?:de\s+|je\s+)?(?:vorige|eerdere|voorgaande|bovenstaande|oorspronkelijke)\s+(?:instructies|opdrachten|regels)", _F)),
    ("instruction_override", "ignore_previous_instructions", "ru", re.compile(
        r"(?:игнорируй(?:те)?|проигнорируй(?:те)?|забудь(?:те)?|не\s+обращай(?:те)?\s+внимания\s+на)\s+(?:все\s+)?(?:предыдущие|прежние|вышеуказанные|изначальные|свои|твои)\s+"
        r"(?:инструкции|указания|правила|команды)", _F)),
    ("instruction_override", "ignore_previous_instructions", "zh", re.compile(
        r"(?:忽略|无视|無視|忘记|忘記|不要理会|不要理會)(?:掉)?(?:你)?(?:之前|以上|上面|先前|前面|此前|所有|全部)(?:的)?(?:所有|全部)?(?:的)?(?:指令|指示|说明|說明|提示|规则|規則|要求)")),
    ("instruction_override", "ignore_previous_instructions", "ja", re.compile(
        r"(?:以前|前|上記|これまで|先)の(?:指示|命令|指令|ルール|プロンプト)(?:を|は)?(?:すべて|全て)?(?:無視|忘れ)")),
    ("instruction_override", "ignore_previous_instructions", "ko", re.compile(
        r"(?:이전|위의|앞의|기존)\s*(?:의\s*)?(?:모든\s*)?(?:지시|지침|명령|규칙|프롬프트)(?:사항)?(?:을|를|은|는)?\s*(?:모두\s*)?(?:무시|잊)")),
]

CONTROL_TOKENS = re.compile(
    r"<\|(?:im_start|im_end|im_sep|system|user|assistant|endoftext|eot_id|start_header_id|end_header_id|begin_of_text|"
    r"end_of_text|eom_id|python_tag|channel|message|start|end|return|call|constrain|fim_prefix|fim_middle|fim_suffix|"
    r"endofprompt|tool_call|tool_response)\|>"
    r"|\[/?INST\]|<</?SYS>>|<start_of_turn>|<end_of_turn>|\[/?SYSTEM_PROMPT\]|\[/?AVAILABLE_TOOLS\]|<\uff5c(?:begin|end)\u2581of\u2581sentence\uff5c>"
)

SYSTEM_MARKERS = re.compile(
    r"\b(?:BEGIN|START|END)\s+(?:OF\s+)?(?:THE\s+)?(?:SYSTEM|HIDDEN|SECRET|DEVELOPER|ADMIN)\s+(?:PROMPT|INSTRUCTIONS?|MESSAGE)\b"
    r"|\b(?:new|updated|real|true|actual|hidden|secret)\s+system\s+(?:prompt|instructions?|message)\s*:"
    r"|\bsystem\s+(?:override|prompt\s+override)\b|\badmin(?:istrator)?\s+override\b"
    r"|</?(?:system|system_prompt|sys_prompt|instructions_for_ai)>",
    _F,
)

ROLE_HIJACK = re.compile(
    r"\byou\s+are\s+(?:now|from\s+now\s+on)\s+(?:(?:a|an|the|in|my)\s+)?(?:DAN|STAN|DUDE|AIM|jailbroken|unrestricted|unfiltered|uncensored|unchained|"
    r"evil|free\s+(?:from|of)|no\s+longer\s+(?:an?\s+)?(?:AI|assistant|bound|restricted|limited|ChatGPT)|developer\s+mode|god\s+mode|"
    r"(?:an?\s+)?(?:AI|assistant|model|chatbot)\s+(?:without|with\s+no)\s+(?:any\s+)?(?:restrictions|filters|limits|rules|guidelines))"
    r"|\bdo\s+anything\s+now\b"
    r"|\b(?:developer|god|jailbreak|DAN|unrestricted)\s+mode\s+(?:is\s+)?(?:enabled|activated|on|unlocked)\b"
    r"|\b(?:enable|activate|enter)\s+(?:developer|god|jailbreak|DAN)\s+mode\b"
    r"|\bfrom\s+now\s+on,?\s+you\s+(?:will|must|shall|are\s+going\s+to)\s+(?:\w+\s+){0,4}?(?:without\s+(?:any\s+)?(?:restrictions|filters|censorship|limits|refusing)|"
    r"ignore\s+(?:all\s+|your\s+)?(?:rules|guidelines|restrictions|policies)|never\s+refuse)"
    r"|\bpretend\s+(?:that\s+)?you\s+(?:are|have)\s+(?:no|not\s+bound\s+by\s+any)\s+(?:restrictions|rules|guidelines|filters)",
    re.IGNORECASE,
)
_DAN_CASE = re.compile(r"\b(?:DAN|STAN|DUDE|AIM)\b")  # the persona names must be upper case

EXFIL = re.compile(
    r"\b(?:reveal|print|output|repeat|show|display|leak|tell\s+me|write\s+out|recite|dump)\s+(?:me\s+)?(?:all\s+)?(?:of\s+)?(?:your|the)\s+"
    r"(?:(?:full|entire|original|initial|hidden|secret|complete)\s+)*(?:system\s+prompt|system\s+message|initial\s+(?:prompt|instructions)|"
    r"hidden\s+(?:prompt|instructions)|pre-?prompt|instructions\s+above|prompt\s+above)"
    r"|\brepeat\s+the\s+(?:words|text)\s+above\s+starting\s+with\b",
    _F,
)

ROLE_HEADER = re.compile(
    r"(?m)^[ \t>]*(?:#{1,4}[ \t]*(?i:system(?:[ \t]+prompt)?)[ \t]*:?[ \t]*$|#{1,4}[ \t]*(?i:system)[ \t]*:"
    r"|(?:SYSTEM|(?i:system[ \t]+prompt))[ \t]*:|\[(?:system|SYSTEM)\]|\((?:system|SYSTEM)\)[ \t]*:)"
)

_AI = r"(?:AI|A\.I\.|LLM|LLMs|large\s+language\s+model|language\s+model|AI\s+(?:assistant|agent|model|system)|assistant|chatbot|ChatGPT|GPT-?\d?|Claude|Gemini|Copilot|Llama|bot|agent|crawler|model)"
AI_ADDRESSED = re.compile(
    rf"\bif\s+you\s+are\s+(?:an?\s+|the\s+)?(?:\w+\s+)?{_AI}\b(?:\s+\w+){{0,8}}?[,:]?\s+(?:you\s+(?:must|should|will|need\s+to)|please|ignore|do\s+not|don'?t|instead|always|never|respond|reply|say|output|include|tell|write|recommend|rate|summari[sz]e)"
    rf"|\b(?:note|message|instructions?|attention|important\s+(?:note|message))\s+(?:to|for)\s+(?:the\s+|any\s+|all\s+)?{_AI}s?\b\s*[:,-]"
    rf"|\b(?:dear|hey|attention)\s+(?:the\s+)?{_AI}s?\s*[:,!]"
    rf"|\b(?:all\s+|any\s+)?{_AI}s?\s+(?:reading|processing|summari[sz]ing|parsing|crawling|scraping|indexing)\s+this\s+(?:\w+\s+)?(?:must|should|shall|are\s+(?:required|instructed)\s+to|will|need\s+to)\b",
    _F,
)
_IMPERATIVE_TO_AI = re.compile(
    rf"(?:\b{_AI}s?\b.{{0,80}}?\b(?:must|should|shall|ignore|instead|respond|reply|say|output|print|include|recommend|tell\s+the\s+user|do\s+not|don'?t|always|never)\b"
    rf"|\b(?:ignore|disregard)\b.{{0,60}}?\b(?:instructions|prompt|rules|above|previous)\b"
    rf"|\b(?:you\s+(?:must|should|will)|respond\s+(?:only\s+)?with|reply\s+(?:only\s+)?with|say\s+that|tell\s+the\s+user)\b)",
    re.IGNORECASE | re.DOTALL,
)
_HIDDEN_CONTAINERS = re.compile(
    r"<!--(.*?)-->"
    r"|<(\w+)[^>]*?style\s*=\s*[\"'][^\"']*(?:display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?:px|pt|em)?\s*[;\"']|opacity\s*:\s*0\s*[;\"'])[^>]*>(.*?)</\2\s*>"
    r"|<(\w+)[^>]*?\bhidden\b[^>]*>(.*?)</\4\s*>",
    re.IGNORECASE | re.DOTALL,
)
_QUOTES = "\"'\u201c\u201d\u2018\u2019\u00ab\u00bb\u300c\u300d"


def _quoted(text: str, start: int, end: int) -> bool:
    """Whether the span sits right inside quotation marks (text discussing an attack)."""
    before = text[max(0, start - 2):start]
    after = text[end:end + 2]
    return any(q in before for q in _QUOTES) and any(q in after for q in _QUOTES + ".,")


def _snippet(text: str, start: int, end: int, cap: int = 160) -> str:
    s = text[start:end]
    return s if len(s) <= cap else s[:cap] + "\u2026"


def _scan_override(text: str) -> Iterator[RawMatch]:
    for kind, rule, lang, rx in OVERRIDE_PATTERNS:
        for m in rx.finditer(text):
            f = 0.75 if _quoted(text, m.start(), m.end()) else 1.0
            yield kind, m.start(), m.end(), f, {"pattern": rule, "lang": lang, "text": _snippet(text, m.start(), m.end())}


def _scan_control(text: str) -> Iterator[RawMatch]:
    for m in CONTROL_TOKENS.finditer(text):
        yield "chat_control_token", m.start(), m.end(), 1.0, {"pattern": "control_token", "lang": "", "text": m.group(0)}


def _scan_roles(text: str) -> Iterator[RawMatch]:
    for m in SYSTEM_MARKERS.finditer(text):
        f = 0.75 if _quoted(text, m.start(), m.end()) else 1.0
        yield "system_prompt_marker", m.start(), m.end(), f, {"pattern": "system_marker", "lang": "en", "text": _snippet(text, m.start(), m.end())}
    for m in ROLE_HIJACK.finditer(text):
        persona = re.search(r"\b(?:dan|stan|dude|aim)\b", m.group(0), re.IGNORECASE)
        if persona and not _DAN_CASE.search(m.group(0)):
            continue  # "you are now aim..." in lower case is ordinary English
        f = 0.75 if _quoted(text, m.start(), m.end()) else 1.0
        yield "role_hijack", m.start(), m.end(), f, {"pattern": "role_hijack", "lang": "en", "text": _snippet(text, m.start(), m.end())}
    for m in EXFIL.finditer(text):
        f = 0.75 if _quoted(text, m.start(), m.end()) else 1.0
        yield "prompt_exfiltration", m.start(), m.end(), f, {"pattern": "prompt_exfiltration", "lang": "en", "text": _snippet(text, m.start(), m.end())}
    for m in ROLE_HEADER.finditer(text):
        s = m.start() + (len(m.group(0)) - len(m.group(0).lstrip(" \t>")))
        yield "role_header", s, m.end(), 1.0, {"pattern": "role_header", "lang": "en", "text": m.group(0).strip()}


def _scan_addressed(text: str) -> Iterator[RawMatch]:
    for m in AI_ADDRESSED.finditer(text):
        f = 0.75 if _quoted(text, m.start(), m.end()) else 1.0
        yield "ai_addressed", m.start(), m.end(), f, {"pattern": "ai_addressed", "lang": "en", "text": _snippet(text, m.start(), m.end())}


def _hidden_payload_is_instruction(payload: str) -> bool:
    if any(True for _ in _scan_override(payload)) or CONTROL_TOKENS.search(payload) or SYSTEM_MARKERS.search(payload):
        return True
    if ROLE_HIJACK.search(payload) or EXFIL.search(payload) or AI_ADDRESSED.search(payload):
        return True
    return bool(_IMPERATIVE_TO_AI.search(payload)) and bool(re.search(rf"\b{_AI}s?\b|\byou\b", payload, re.IGNORECASE))


def _scan_hidden(text: str) -> Iterator[RawMatch]:
    for m in _HIDDEN_CONTAINERS.finditer(text):
        payload = m.group(1) if m.group(1) is not None else (m.group(3) if m.group(3) is not None else m.group(5))
        if payload and len(payload) <= 20000 and _hidden_payload_is_instruction(payload):
            where = "html_comment" if m.group(1) is not None else "hidden_element"
            yield "hidden_instruction", m.start(), m.end(), 1.0, {
                "pattern": where, "lang": "", "hidden_text": _snippet(payload.strip(), 0, len(payload.strip()), 300)}
    # Unicode tag characters (invisible): decode and look for an instruction
    i, n = 0, len(text)
    while i < n:
        if 0xE0000 <= ord(text[i]) <= 0xE007F:
            j = i
            while j < n and 0xE0000 <= ord(text[j]) <= 0xE007F:
                j += 1
            decoded = "".join(chr(ord(c) - 0xE0000) for c in text[i:j] if 0x20 <= ord(c) - 0xE0000 <= 0x7E)
            if decoded and _hidden_payload_is_instruction(decoded):
                yield "hidden_instruction", i, j, 1.0, {"pattern": "unicode_tags", "lang": "", "hidden_text": decoded[:300]}
            i = j
        else:
            i += 1


# RE2 prefilters: supersets of what each scanner can match
PRE_OVERRIDE = (
    r"(?i)(?:ignor|disregard|forget|overrid|bypass|skip|discard|drop|abandon|follow|obey)[^\n]{0,80}?(?:instruc|prompt|direct|rule|guide|guardrail|"
    r"constraint|restrict|command|order|programming|context|message|polic|above|before|previous|told|taught|trained)|"
    r"new instructions|follow these|ignorier|ignorez|ignorer|ignora|ignore\s+(?:todas|as|las)|vergiss|vergessen|missacht|"
    r"oublie|tiens pas|olvid|caso omiso|dimentic|esque|desconsider|negeer|vergeet|игнорир|проигнорир|забудь|не обращай|"
    r"忽略|无视|無視|忘记|忘記|不要理|忘れ|무시|잊"
)
PRE_CONTROL = r"<\||\[/?INST\]|<</?SYS>>|<start_of_turn>|<end_of_turn>|\[/?SYSTEM_PROMPT\]|\[/?AVAILABLE_TOOLS\]|<\x{FF5C}"
PRE_ROLES = (
    r"(?i)system|admin|<instructions_for_ai|you\s+are\s+(now|from)|anything\s+now|mode|from\s+now\s+on|pretend|"
    r"reveal|print|output|repeat|show|display|leak|tell\s+me|write\s+out|recite|dump"
)
PRE_ADDRESSED = r"(?i)\bif\s+you\s+are\b|\b(note|message|instructions?|attention)\s+(to|for)\b|\b(dear|hey|attention)\b|\b(reading|processing|summari[sz]ing|parsing|crawling|scraping|indexing)\s+this\b"
PRE_HIDDEN = r"(?i)<!--|display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0|opacity\s*:\s*0|\bhidden\b|[\x{E0000}-\x{E007F}]"


class InjectionCheck(TextScanCheck):
    name = "poison.injection"
    description = (
        "Prompt-injection payloads in data: instruction overrides (multilingual), hidden instructions in HTML "
        "comments/hidden elements/Unicode tags, chat control tokens, fake system prompts, jailbreak personas."
    )
    KINDS = KINDS
    DEFAULT_SCORES = DEFAULT_SCORES
    redact = False  # the matches are what a reviewer must read (no secret in them)

    class Options(text_scan_options(KINDS, DEFAULT_SCORES, min_score=0.5,
                                    min_score_description="drop weaker matches")):
        max_chars: int = Field(200000, ge=100, description="scan at most this many characters per field")

    default_severity = "warn"
    version = 1

    def scan_groups(self) -> list[ScanGroup]:
        cap = int(self.options["max_chars"])

        def capped(fn):
            return lambda text: fn(text[:cap])

        roles = frozenset({"system_prompt_marker", "role_hijack", "prompt_exfiltration", "role_header"})
        return [
            ScanGroup("override", PRE_OVERRIDE, frozenset({"instruction_override"}), capped(_scan_override)),
            ScanGroup("control", PRE_CONTROL, frozenset({"chat_control_token"}), capped(_scan_control)),
            ScanGroup("roles", PRE_ROLES, roles, capped(_scan_roles)),
            ScanGroup("addressed", PRE_ADDRESSED, frozenset({"ai_addressed"}), capped(_scan_addressed)),
            ScanGroup("hidden", PRE_HIDDEN, frozenset({"hidden_instruction"}), capped(_scan_hidden)),
        ]
