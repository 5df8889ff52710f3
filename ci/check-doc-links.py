#!/usr/bin/env python3
"""Checks every relative link in the repository's Markdown files: the target
must be a file (or a folder) tracked in this repository, and a #fragment on a
Markdown target must name one of its headings (GitHub's anchor rules).
Links to http(s) and mailto are not followed. Prints one line per broken
link and exits 1 if there is any.

  python3 ci/check-doc-links.py            all tracked *.md files
  python3 ci/check-doc-links.py FILE.md    only these
"""

import os
import re
import subprocess
import sys

LINK = re.compile(r"(?<!!)\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def repo_root():
    return subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                          check=True).stdout.strip()


def tracked(root):
    out = subprocess.run(["git", "-C", root, "ls-files", "-z"], capture_output=True, text=True, check=True).stdout
    files = set(f for f in out.split("\0") if f)
    folders = set()
    for f in files:
        parts = f.split("/")
        for i in range(1, len(parts)):
            folders.add("/".join(parts[:i]))
    return files, folders


def strip_code(text):
    """Drops fenced code blocks and inline code spans (links there are not links)."""
    lines, out, fence = text.split("\n"), [], None
    for line in lines:
        m = re.match(r"^\s*(```+|~~~+)", line)
        if m:
            fence = None if fence and m.group(1).startswith(fence) else (fence or m.group(1)[:3])
            out.append("")
            continue
        out.append("" if fence else re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def slug(heading):
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    seen, result = {}, set()
    with open(path, encoding="utf-8") as f:
        for line in strip_code(f.read()).split("\n"):
            m = HEADING.match(line)
            if not m:
                continue
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            result.add(base if n == 0 else "%s-%d" % (base, n))
    return result


def main():
    root = repo_root()
    files, folders = tracked(root)
    docs = sys.argv[1:] or sorted(f for f in files if f.endswith(".md"))
    broken, checked = [], 0
    for doc in docs:
        if sys.argv[1:]:
            doc = os.path.relpath(os.path.abspath(doc), root)  # given relative to the current folder
        with open(os.path.join(root, doc), encoding="utf-8") as f:
            text = strip_code(f.read())
        for lineno, line in enumerate(text.split("\n"), 1):
            for m in LINK.finditer(line):
                target = m.group(1)
                if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                    continue  # http:, https:, mailto:
                checked += 1
                path, _, fragment = target.partition("#")
                where = "%s:%d: %s" % (doc, lineno, target)
                if path:
                    resolved = os.path.normpath(os.path.join(os.path.dirname(doc), path))
                else:
                    resolved = doc
                if resolved.startswith("..") or os.path.isabs(resolved):
                    broken.append(where + ": outside the repository")
                    continue
                if path and resolved not in files and resolved.rstrip("/") not in folders:
                    broken.append(where + ": no such tracked file")
                    continue
                if fragment and resolved.endswith(".md") and fragment not in anchors(os.path.join(root, resolved)):
                    broken.append(where + ": no heading #" + fragment)
    for line in broken:
        print(line)
    print("check-doc-links: %d files, %d relative links, %d broken" % (len(docs), checked, len(broken)))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
