"""A strict parser of the Prometheus text exposition format (version 0.0.4),
written from the format's rules for the tests of GET /v1/metrics. It raises
PromError on every violation instead of guessing:

- lines end with "\\n" (the last one too); "# HELP NAME TEXT" and
  "# TYPE NAME TYPE" at most once per name, before that name's samples;
  other "#" lines are comments; empty lines are ignored;
- metric names [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]*
  (not "__..."), each at most once per sample; label values in double
  quotes with only \\\\, \\" and \\n escapes; HELP text with only \\\\ and \\n;
- values are Go floats (NaN, +Inf, -Inf included); an optional integer
  timestamp follows;
- a family's lines form one group (no interleaving with other families); a
  series (name and label set) appears once;
- counters are not negative; histograms have, per label set, _bucket lines
  whose "le" bounds strictly ascend and end with +Inf, non-decreasing
  cumulative counts, and one _sum and one _count, the _count equal to the
  +Inf bucket; summaries have quantile labels in [0, 1] and _sum/_count.

parse(text, require_meta=True) -> {family: Family}. With require_meta every
family must carry both HELP and TYPE (ferry's own convention, stricter than
the format, which allows untyped families).
"""

import math
import re
from dataclasses import dataclass, field

METRIC_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
FLOAT_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
INT_RE = re.compile(r"-?\d+")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"),
            "summary": ("_sum", "_count", "")}


class PromError(ValueError):
    def __init__(self, lineno, msg):
        super().__init__(f"line {lineno}: {msg}")
        self.lineno = lineno


@dataclass
class Family:
    name: str
    type: str = "untyped"
    help: str = None
    typed: bool = False
    samples: list = field(default_factory=list)  # (name, labels dict, value)

    def value(self, suffix="", **labels):
        """The value of the sample name+suffix with exactly these labels."""
        for n, l, v in self.samples:
            if n == self.name + suffix and l == labels:
                return v
        raise KeyError(f"{self.name}{suffix}{labels}")


def parse_float(s, lineno, what="value"):
    if s in ("NaN", "+Inf", "-Inf", "Inf"):
        return float(s.replace("Inf", "inf").replace("NaN", "nan"))
    if not FLOAT_RE.fullmatch(s):
        raise PromError(lineno, f"{what} {s!r} is not a number")
    return float(s)


def unescape(s, lineno, allowed):
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            if i + 1 >= len(s) or s[i + 1] not in allowed:
                raise PromError(lineno, f"bad escape in {s!r}")
            out.append({"\\": "\\", "n": "\n", '"': '"'}[s[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_labels(s, i, lineno):
    """Parse '{...}' starting at s[i] == '{'; returns (labels, next index)."""
    labels = {}
    i += 1
    while True:
        if i < len(s) and s[i] == "}":
            return labels, i + 1
        m = LABEL_RE.match(s, i)
        if not m:
            raise PromError(lineno, f"bad label name at column {i + 1}")
        name = m.group(0)
        if name.startswith("__"):
            raise PromError(lineno, f"label name {name} is reserved")
        if name in labels:
            raise PromError(lineno, f"label {name} given twice")
        i = m.end()
        if s[i:i + 2] != '="':
            raise PromError(lineno, f'expected =" after label {name}')
        i += 2
        j = i
        while j < len(s) and s[j] != '"':
            j += 2 if s[j] == "\\" else 1
        if j >= len(s):
            raise PromError(lineno, f"unterminated value of label {name}")
        labels[name] = unescape(s[i:j], lineno, '\\"n')
        i = j + 1
        if i < len(s) and s[i] == ",":
            i += 1
        elif i < len(s) and s[i] != "}":
            raise PromError(lineno, f"expected , or }} after label {name}")


def family_of(name, families):
    """The family a sample name belongs to: itself, or a histogram or
    summary whose suffix it carries."""
    if name in families and families[name].type not in ("histogram",):
        return families[name], ""
    for fam in families.values():
        for suf in SUFFIXES.get(fam.type, ()):
            if suf and name == fam.name + suf:
                return fam, suf
    if name in families:
        return families[name], ""
    return None, None


def parse(text, require_meta=True):
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise PromError(0, f"not UTF-8: {e}")
    if text and not text.endswith("\n"):
        raise PromError(text.count("\n") + 1, "the last line does not end with \\n")
    families, done, series = {}, set(), set()
    current = None
    for lineno, line in enumerate(text.split("\n")[:-1], 1):
        if line.strip() == "":
            continue
        if line.startswith("#"):
            parts = line[1:].lstrip(" \t").split(None, 2)
            if not parts or parts[0] not in ("HELP", "TYPE"):
                continue  # a comment
            kind = parts[0]
            if len(parts) < 2 or not METRIC_RE.fullmatch(parts[1]):
                raise PromError(lineno, f"{kind} without a valid metric name")
            name = parts[1]
            if name in done:
                raise PromError(lineno, f"{kind} of {name} after its group ended")
            fam = families.get(name)
            if fam is None:
                fam = families[name] = Family(name)
            if fam.samples:
                raise PromError(lineno, f"{kind} of {name} after its samples")
            if current is not None and current is not fam:
                done.add(current.name)
            current = fam
            if kind == "HELP":
                if fam.help is not None:
                    raise PromError(lineno, f"second HELP for {name}")
                fam.help = unescape(parts[2] if len(parts) > 2 else "", lineno, "\\n")
            else:
                if fam.typed:
                    raise PromError(lineno, f"second TYPE for {name}")
                t = parts[2].strip() if len(parts) > 2 else ""
                if t not in TYPES:
                    raise PromError(lineno, f"unknown type {t!r} for {name}")
                fam.type, fam.typed = t, True
            continue
        m = METRIC_RE.match(line)
        if not m:
            raise PromError(lineno, "a sample must start with a metric name")
        name, i = m.group(0), m.end()
        labels = {}
        if i < len(line) and line[i] == "{":
            labels, i = parse_labels(line, i, lineno)
        rest = line[i:]
        if not rest[:1] in (" ", "\t"):
            raise PromError(lineno, f"expected a blank before the value of {name}")
        fields = rest.split()
        if len(fields) not in (1, 2):
            raise PromError(lineno, f"expected a value and an optional timestamp: {rest!r}")
        value = parse_float(fields[0], lineno)
        if len(fields) == 2 and not INT_RE.fullmatch(fields[1]):
            raise PromError(lineno, f"timestamp {fields[1]!r} is not an integer")
        fam, suffix = family_of(name, families)
        if fam is None:
            fam = families[name] = Family(name)
            suffix = ""
        if fam.name in done:
            raise PromError(lineno, f"sample of {fam.name} after its group ended")
        if current is not None and current is not fam:
            done.add(current.name)
        current = fam
        if fam.type == "histogram" and suffix == "":
            raise PromError(lineno, f"histogram {name} sample without _bucket/_sum/_count")
        if fam.type in ("histogram", "summary") and "le" in labels and suffix != "_bucket":
            raise PromError(lineno, f"le label on {name}")
        key = (name, tuple(sorted(labels.items())))
        if key in series:
            raise PromError(lineno, f"series {name}{labels} given twice")
        series.add(key)
        if fam.type == "counter" and not value >= 0:
            raise PromError(lineno, f"counter {name} is {value}")
        fam.samples.append((name, labels, value))
    for fam in families.values():
        if require_meta and (fam.help is None or not fam.typed):
            raise PromError(0, f"{fam.name} lacks HELP or TYPE")
        if fam.type == "histogram":
            check_histogram(fam)
        elif fam.type == "summary":
            check_summary(fam)
    return families


def check_histogram(fam):
    groups = {}
    for name, labels, value in fam.samples:
        suffix = name[len(fam.name):]
        rest = {k: v for k, v in labels.items() if k != "le"}
        g = groups.setdefault(tuple(sorted(rest.items())),
                              {"buckets": [], "_sum": None, "_count": None})
        if suffix == "_bucket":
            if "le" not in labels:
                raise PromError(0, f"{name}{labels} has no le label")
            g["buckets"].append((parse_float(labels["le"], 0, "le"), value))
        else:
            if g[suffix] is not None:
                raise PromError(0, f"{name}{labels}: second {suffix}")
            g[suffix] = value
    for key, g in groups.items():
        where = f"{fam.name}{dict(key)}"
        b = g["buckets"]
        if not b:
            raise PromError(0, f"{where} has no buckets")
        for (le0, c0), (le1, c1) in zip(b, b[1:]):
            if not le1 > le0:
                raise PromError(0, f"{where}: le {le1} does not follow {le0}")
            if c1 < c0:
                raise PromError(0, f"{where}: bucket le={le1} counts less than le={le0}")
        if b[-1][0] != math.inf:
            raise PromError(0, f"{where}: the last bucket is not le=\"+Inf\"")
        if any(c < 0 or c != int(c) for _, c in b):
            raise PromError(0, f"{where}: bucket counts must be whole and not negative")
        if g["_sum"] is None or g["_count"] is None:
            raise PromError(0, f"{where}: _sum or _count missing")
        if g["_count"] != b[-1][1]:
            raise PromError(0, f"{where}: _count {g['_count']} != +Inf bucket {b[-1][1]}")


def check_summary(fam):
    counts = {}
    for name, labels, value in fam.samples:
        suffix = name[len(fam.name):]
        if suffix == "":
            q = parse_float(labels.get("quantile", "x"), 0, "quantile")
            if not 0 <= q <= 1:
                raise PromError(0, f"{name}{labels}: quantile out of [0, 1]")
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "quantile"))
        counts.setdefault(rest, set()).add(suffix)
    for key, seen in counts.items():
        if not {"_sum", "_count"} <= seen:
            raise PromError(0, f"{fam.name}{dict(key)}: _sum or _count missing")
