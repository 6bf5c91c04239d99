#!/usr/bin/env python3
"""Generate Gleaner's committed text corpora, deterministically, with no network.

    bench/corpus-1000.txt   1,000 English-like sentences (10-40 words each), for benchmarks
    demo/corpus.txt         300 sentences, for the end-to-end demo job

Usage:
    python3 scripts/gen-corpus.py            # (re)write both files
    python3 scripts/gen-corpus.py --check    # exit 1 if the committed files differ

Only random.Random(seed) with random()/randrange()/choice() is used, whose
output is stable across CPython 3 versions, so the files are reproducible.
Sentences are unique within each file, one per line, UTF-8, '\n' line endings.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

MIN_WORDS, MAX_WORDS = 10, 40

# --------------------------------------------------------------------------
# Word lists
# --------------------------------------------------------------------------
DETERMINERS = ["the", "a", "every", "one", "that", "this", "our", "their", "each", "another"]
PLURAL_DETERMINERS = ["the", "some", "many", "several", "most", "these", "those", "our", "a few", "two"]

ADJECTIVES = [
    "quiet", "busy", "old", "young", "bright", "narrow", "wide", "careful", "tired", "curious",
    "small", "large", "ancient", "modern", "rusty", "shiny", "local", "distant", "patient", "noisy",
    "green", "golden", "broken", "hidden", "famous", "humble", "clever", "gentle", "stubborn", "sudden",
    "cheap", "expensive", "wooden", "frozen", "warm", "cold", "empty", "crowded", "fragile", "steady",
    "honest", "remote", "efficient", "reliable", "slow", "fast", "heavy", "light", "simple", "strange",
]

# (singular, plural)
NOUNS = [
    ("farmer", "farmers"), ("teacher", "teachers"), ("engineer", "engineers"), ("river", "rivers"),
    ("village", "villages"), ("market", "markets"), ("library", "libraries"), ("train", "trains"),
    ("bridge", "bridges"), ("garden", "gardens"), ("server", "servers"), ("worker", "workers"),
    ("student", "students"), ("musician", "musicians"), ("doctor", "doctors"), ("sailor", "sailors"),
    ("city", "cities"), ("forest", "forests"), ("mountain", "mountains"), ("storm", "storms"),
    ("report", "reports"), ("letter", "letters"), ("machine", "machines"), ("kitchen", "kitchens"),
    ("child", "children"), ("painter", "painters"), ("committee", "committees"), ("harbour", "harbours"),
    ("company", "companies"), ("museum", "museums"), ("recipe", "recipes"), ("bicycle", "bicycles"),
    ("lighthouse", "lighthouses"), ("orchard", "orchards"), ("scientist", "scientists"),
    ("neighbour", "neighbours"), ("festival", "festivals"), ("database", "databases"),
    ("network", "networks"), ("satellite", "satellites"), ("telescope", "telescopes"),
    ("baker", "bakers"), ("journalist", "journalists"), ("island", "islands"), ("road", "roads"),
    ("dog", "dogs"), ("cat", "cats"), ("bird", "birds"), ("team", "teams"), ("model", "models"),
]

# (3rd-person singular present, plural present, past)
VERBS = [
    ("repairs", "repair", "repaired"), ("visits", "visit", "visited"), ("builds", "build", "built"),
    ("watches", "watch", "watched"), ("describes", "describe", "described"), ("moves", "move", "moved"),
    ("protects", "protect", "protected"), ("measures", "measure", "measured"), ("paints", "paint", "painted"),
    ("studies", "study", "studied"), ("follows", "follow", "followed"), ("crosses", "cross", "crossed"),
    ("finds", "find", "found"), ("sells", "sell", "sold"), ("cleans", "clean", "cleaned"),
    ("explains", "explain", "explained"), ("carries", "carry", "carried"), ("opens", "open", "opened"),
    ("checks", "check", "checked"), ("records", "record", "recorded"), ("shares", "share", "shared"),
    ("ignores", "ignore", "ignored"), ("welcomes", "welcome", "welcomed"), ("replaces", "replace", "replaced"),
    ("counts", "count", "counted"), ("improves", "improve", "improved"), ("reads", "read", "read"),
    ("designs", "design", "designed"), ("photographs", "photograph", "photographed"),
    ("schedules", "schedule", "scheduled"), ("verifies", "verify", "verified"), ("feeds", "feed", "fed"),
]

INTRANSITIVE = [
    ("waits", "wait", "waited"), ("sleeps", "sleep", "slept"), ("arrives", "arrive", "arrived"),
    ("disappears", "disappear", "disappeared"), ("laughs", "laugh", "laughed"), ("works", "work", "worked"),
    ("travels", "travel", "travelled"), ("grows", "grow", "grew"), ("sings", "sing", "sang"),
    ("rests", "rest", "rested"), ("fails", "fail", "failed"), ("recovers", "recover", "recovered"),
]

ADVERBS = [
    "slowly", "quickly", "quietly", "carefully", "often", "rarely", "suddenly", "finally", "again",
    "happily", "reluctantly", "silently", "eagerly", "barely", "nearly", "usually", "gradually",
]

PREPOSITIONS = [
    "near", "behind", "under", "across", "beside", "inside", "beyond", "along", "through",
    "around", "above", "without", "with", "after", "before", "during",
]

TIME_PHRASES = [
    "every morning", "last winter", "on Tuesday", "at midnight", "in the spring", "after lunch",
    "before dawn", "later that evening", "once a week", "in 1998", "since March", "by the weekend",
    "for three hours", "during the holidays", "on the first day of the month", "at half past seven",
]

SUBORDINATORS = ["because", "although", "while", "when", "after", "before", "unless", "since", "until"]
CONJUNCTIONS = ["and", "but", "so", "yet"]
ADVERBIAL_OPENERS = [
    "Meanwhile", "However", "Fortunately", "Surprisingly", "In the end", "For a while", "Later",
    "As usual", "Without warning", "To everyone's surprise", "In fact", "Eventually",
]

NAMES = [
    "Alice", "Bruno", "Chen", "Dalia", "Emeka", "Farah", "Gustav", "Hana", "Ivan", "Jonas",
    "Keiko", "Lars", "Maya", "Nikhil", "Olga", "Pablo", "Quentin", "Rosa", "Sven", "Tomasz",
]
PLACES = [
    "Lisbon", "Nairobi", "Oslo", "Kyoto", "Lima", "Toronto", "Krakow", "Cairo", "Hobart",
    "Tallinn", "Dublin", "Porto", "Reykjavik", "Montreal", "Valparaiso", "Bergen",
]
NUMBERS = ["two", "three", "seven", "twelve", "forty", "a hundred", "3", "17", "250", "1,200", "half a dozen"]


# --------------------------------------------------------------------------
# Grammar
# --------------------------------------------------------------------------
class Gen:
    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def chance(self, p: float) -> bool:
        return self.r.random() < p

    def pick(self, xs):
        return self.r.choice(xs)

    def noun_phrase(self, allow_name: bool = True) -> tuple[str, bool]:
        """Returns (phrase, is_plural)."""
        if allow_name and self.chance(0.15):
            return self.pick(NAMES), False
        plural = self.chance(0.4)
        sing, plur = self.pick(NOUNS)
        det = self.pick(PLURAL_DETERMINERS if plural else DETERMINERS)
        words = [det]
        if self.chance(0.55):
            words.append(self.pick(ADJECTIVES))
            if self.chance(0.15):
                words.append(self.pick(ADJECTIVES))
        words.append(plur if plural else sing)
        phrase = " ".join(words)
        if det == "a" and words[1][0] in "aeiou":
            phrase = "an " + phrase[2:]
        if self.chance(0.12):
            phrase += " from " + self.pick(PLACES)
        return phrase, plural

    def prep_phrase(self) -> str:
        if self.chance(0.3):
            return self.pick(TIME_PHRASES)
        np_, _ = self.noun_phrase(allow_name=False)
        return f"{self.pick(PREPOSITIONS)} {np_}"

    def clause(self, tense: str) -> str:
        subj, plural = self.noun_phrase()
        transitive = self.chance(0.75)
        sing, plur, past = self.pick(VERBS if transitive else INTRANSITIVE)
        verb = past if tense == "past" else (plur if plural else sing)
        words = [subj]
        if self.chance(0.25):
            words.append(self.pick(ADVERBS))
        words.append(verb)
        if transitive:
            if self.chance(0.1):
                words.append(f"{self.pick(NUMBERS)} {self.pick(NOUNS)[1]}")
            else:
                words.append(self.noun_phrase()[0])
        for _ in range(self.r.randrange(0, 3)):
            words.append(self.prep_phrase())
        return " ".join(words)

    def sentence(self) -> str:
        tense = "past" if self.chance(0.5) else "present"
        parts = [self.clause(tense)]
        for _ in range(self.r.randrange(0, 3)):
            if self.chance(0.5):
                parts.append(f"{self.pick(SUBORDINATORS)} {self.clause(tense)}")
            else:
                parts.append(f"{self.pick(CONJUNCTIONS)} {self.clause(tense)}")
        text = ", ".join(parts) if self.chance(0.4) else " ".join(parts)
        roll = self.r.random()
        if roll < 0.07:
            text = "is it true that " + text
            end = "?"
        else:
            end = "!" if roll < 0.12 else "."
            if self.chance(0.2):
                text = f"{self.pick(ADVERBIAL_OPENERS)}, {text}"
            elif self.chance(0.08):
                text = f"{self.pick(NAMES)} said that {text}"
        text = text[0].upper() + text[1:]
        return text + end


def generate(seed: int, count: int) -> list[str]:
    g = Gen(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        s = g.sentence()
        n = len(s.split())
        if MIN_WORDS <= n <= MAX_WORDS and s not in seen:
            seen.add(s)
            out.append(s)
    return out


TARGETS = [
    # (path, seed, count)
    ("bench/corpus-1000.txt", 1000, 1000),
    ("demo/corpus.txt", 300, 300),
]


def main() -> int:
    ap = argparse.ArgumentParser(description="Generate Gleaner's committed corpora.")
    ap.add_argument("--check", action="store_true", help="verify the committed files instead of writing them")
    args = ap.parse_args()

    status = 0
    for rel, seed, count in TARGETS:
        text = "\n".join(generate(seed, count)) + "\n"
        path = REPO_ROOT / rel
        if args.check:
            current = path.read_text(encoding="utf-8") if path.exists() else None
            if current != text:
                print(f"gen-corpus: {rel} is out of date; run python3 scripts/gen-corpus.py", file=sys.stderr)
                status = 1
            else:
                print(f"gen-corpus: {rel} ok", file=sys.stderr)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="\n")
            print(f"gen-corpus: wrote {rel} ({count} lines)", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
