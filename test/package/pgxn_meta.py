#!/usr/bin/env python3
"""test/package/pgxn_meta.py -- check META.json against the PGXN Meta Spec 1.0.

Neither Debian nor the npm registry packages a PGXN validator (PGXN's own is
a Perl module on CPAN), so this is a strict one written from the spec
(https://pgxn.org/spec/, v1.0.0): the required keys, the type and format of
every key the spec defines, and no other key but custom ones (x_ or X_).
On top of the spec, for payflow:
  - every path the file names (provides.*.file, docfile) exists;
  - its versions agree with the extension: META.json's version, and that of
    provides.payflow, are payflow.control's default_version as a semantic
    version (1.1 -> 1.1.0), and debian/changelog's upstream version is the
    same.

  python3 test/package/pgxn_meta.py [META.json]      check; exit 1 on any error
  python3 test/package/pgxn_meta.py --selftest        break a copy of META.json
      in ways the spec forbids and require each one to be refused (TAP)
"""

import copy
import json
import os
import re
import sys
from urllib.parse import urlparse

SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$")
RANGE_OP = re.compile(r"^(==|!=|<=|>=|<|>)?\s*(.*)$")
META_SPEC_VERSION = re.compile(r"^1\.0\.\d+$")
CUSTOM_KEY = re.compile(r"^[xX]_.")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")

LICENSES = {
    "agpl_3", "apache_1_1", "apache_2_0", "artistic_1", "artistic_2", "bsd",
    "freebsd", "gfdl_1_2", "gfdl_1_3", "gpl_1", "gpl_2", "gpl_3", "lgpl_2_1",
    "lgpl_3_0", "mit", "mozilla_1_0", "mozilla_1_1", "openssl", "perl_5",
    "postgresql", "qpl_1_0", "ssleay", "sun", "zlib", "open_source",
    "restricted", "unrestricted", "unknown",
}
REQUIRED = ("name", "version", "abstract", "maintainer", "license", "provides", "meta-spec")
OPTIONAL = ("description", "generated_by", "tags", "no_index", "prereqs",
            "release_status", "resources")
PHASES = ("configure", "build", "test", "runtime", "develop")
RELATIONS = ("requires", "recommends", "suggests", "conflicts")
SPEC_URLS = ("https://pgxn.org/meta/spec.txt", "http://pgxn.org/meta/spec.txt")


class Checker:
    def __init__(self):
        self.errors = []

    def err(self, where, what):
        self.errors.append(f"{where}: {what}")

    # -- the spec's value types -------------------------------------------
    def string(self, where, v, min_len=1):
        if not isinstance(v, str):
            self.err(where, f"must be a string, not {type(v).__name__}")
            return False
        if len(v) < min_len:
            self.err(where, f"must have at least {min_len} character(s)")
            return False
        return True

    def term(self, where, v):
        # A Term: at least two characters, no slash, backslash, space or control.
        if self.string(where, v, 2) and re.search(r"[/\\\s\x00-\x1f\x7f]", v):
            self.err(where, f"{v!r} is not a Term (no slash, backslash, space or control character)")

    def tag(self, where, v):
        if self.string(where, v, 2):
            if len(v) > 255:
                self.err(where, "a tag has fewer than 256 characters")
            if re.search(r"[/\\\x00-\x1f\x7f]", v):
                self.err(where, f"{v!r} is not a tag (no slash, backslash or control character)")

    def semver(self, where, v):
        if self.string(where, v) and not SEMVER.match(v):
            self.err(where, f"{v!r} is not a semantic version (MAJOR.MINOR.PATCH)")

    def uri(self, where, v):
        if self.string(where, v):
            u = urlparse(v)
            if not u.scheme or not (u.netloc or u.scheme == "mailto"):
                self.err(where, f"{v!r} is not an absolute URI")

    def path(self, where, v):
        # Relative, unix conventions.
        if self.string(where, v, 2):
            if v.startswith("/") or "\\" in v or re.match(r"^[A-Za-z]:", v):
                self.err(where, f"{v!r} is not a relative path in unix conventions")

    def version_range(self, where, v):
        if v == 0 and not isinstance(v, bool):
            return
        if not self.string(where, v):
            return
        if v == "0":
            return
        for part in v.split(","):
            m = RANGE_OP.match(part.strip())
            if not m or not SEMVER.match(m.group(2)):
                self.err(where, f"{v!r} is not a version range (0, or [op] semver, comma-separated)")
                return

    def keys(self, where, obj, allowed, required=()):
        if not isinstance(obj, dict):
            self.err(where, f"must be an object, not {type(obj).__name__}")
            return False
        for k in required:
            if k not in obj:
                self.err(where, f"missing required key {k!r}")
        for k in obj:
            if k not in allowed and not CUSTOM_KEY.match(k):
                self.err(where, f"unknown key {k!r} (custom keys start with x_)")
        return True

    # -- the spec's keys --------------------------------------------------
    def maintainer(self, v):
        if isinstance(v, list):
            if not v:
                self.err("maintainer", "an empty list")
            for i, m in enumerate(v):
                self.string(f"maintainer[{i}]", m)
        else:
            self.string("maintainer", v)

    def license(self, v):
        if isinstance(v, str):
            if v not in LICENSES:
                self.err("license", f"{v!r} is not one of the spec's license names")
        elif isinstance(v, list):
            if not v:
                self.err("license", "an empty list")
            for i, name in enumerate(v):
                if name not in LICENSES:
                    self.err(f"license[{i}]", f"{name!r} is not one of the spec's license names")
        elif isinstance(v, dict):
            if not v:
                self.err("license", "an empty object")
            for name, url in v.items():
                self.string("license key", name)
                self.uri(f"license.{name}", url)
        else:
            self.err("license", "must be a license name, a list of them, or an object of name: URI")

    def provides(self, v, root):
        if not isinstance(v, dict) or not v:
            self.err("provides", "a non-empty object of extension name: extension")
            return
        for ext, spec in v.items():
            self.term(f"provides key {ext!r}", ext)
            where = f"provides.{ext}"
            if not self.keys(where, spec, ("file", "version", "abstract", "docfile", "docpath"),
                             ("file", "version")):
                continue
            if "version" in spec:
                self.semver(f"{where}.version", spec["version"])
            if "abstract" in spec:
                self.string(f"{where}.abstract", spec["abstract"])
            if "docpath" in spec:
                self.string(f"{where}.docpath", spec["docpath"])
            for k in ("file", "docfile"):
                if k in spec:
                    self.path(f"{where}.{k}", spec[k])
                    if isinstance(spec[k], str) and not os.path.isfile(os.path.join(root, spec[k])):
                        self.err(f"{where}.{k}", f"{spec[k]!r} is not a file of the distribution")

    def meta_spec(self, v):
        if not self.keys("meta-spec", v, ("version", "url"), ("version",)):
            return
        if "version" in v and not (isinstance(v["version"], str) and META_SPEC_VERSION.match(v["version"])):
            self.err("meta-spec.version", f"{v['version']!r}: this is a 1.0.x document")
        if "url" in v and v["url"] not in SPEC_URLS:
            self.err("meta-spec.url", f"{v['url']!r} is not the spec's URL")

    def file_list(self, where, v):
        items = v if isinstance(v, list) else [v]
        if isinstance(v, list) and (not v or len(set(map(str, v))) != len(v)):
            self.err(where, "a non-empty list of distinct paths")
        for i, p in enumerate(items):
            self.path(f"{where}[{i}]", p)

    def no_index(self, v):
        if self.keys("no_index", v, ("file", "directory")):
            if "file" not in v and "directory" not in v:
                self.err("no_index", "needs file or directory")
            for k in ("file", "directory"):
                if k in v:
                    self.file_list(f"no_index.{k}", v[k])

    def prereqs(self, v):
        if not self.keys("prereqs", v, PHASES):
            return
        if not v:
            self.err("prereqs", "an empty object")
        for phase, rels in v.items():
            if phase not in PHASES:
                continue
            if not self.keys(f"prereqs.{phase}", rels, RELATIONS):
                continue
            if not rels:
                self.err(f"prereqs.{phase}", "an empty object")
            for rel, exts in rels.items():
                if rel not in RELATIONS:
                    continue
                where = f"prereqs.{phase}.{rel}"
                if not isinstance(exts, dict) or not exts:
                    self.err(where, "a non-empty object of extension name: version range")
                    continue
                for ext, rng in exts.items():
                    self.term(f"{where} key {ext!r}", ext)
                    self.version_range(f"{where}.{ext}", rng)

    def resources(self, v):
        if not self.keys("resources", v, ("homepage", "bugtracker", "repository")):
            return
        if not v:
            self.err("resources", "an empty object")
        if "homepage" in v:
            self.uri("resources.homepage", v["homepage"])
        if "bugtracker" in v and self.keys("resources.bugtracker", v["bugtracker"], ("web", "mailto")):
            bt = v["bugtracker"]
            if "web" in bt:
                self.uri("resources.bugtracker.web", bt["web"])
            if "mailto" in bt and self.string("resources.bugtracker.mailto", bt["mailto"]) \
                    and not EMAIL.match(bt["mailto"]):
                self.err("resources.bugtracker.mailto", f"{bt['mailto']!r} is not an email address")
        if "repository" in v and self.keys("resources.repository", v["repository"], ("url", "web", "type")):
            repo = v["repository"]
            for k in ("url", "web"):
                if k in repo:
                    self.uri(f"resources.repository.{k}", repo[k])
            if "type" in repo and self.string("resources.repository.type", repo["type"]) \
                    and repo["type"] != repo["type"].lower():
                self.err("resources.repository.type", "a lowercase VCS name")
            if "web" not in repo and not ("url" in repo and "type" in repo):
                self.err("resources.repository", "needs web, or url and type")

    def document(self, meta, root):
        if not self.keys("META.json", meta, REQUIRED + OPTIONAL, REQUIRED):
            return
        if "name" in meta:
            self.term("name", meta["name"])
        if "version" in meta:
            self.semver("version", meta["version"])
        for k in ("abstract", "description", "generated_by"):
            if k in meta:
                self.string(k, meta[k])
        if "maintainer" in meta:
            self.maintainer(meta["maintainer"])
        if "license" in meta:
            self.license(meta["license"])
        if "provides" in meta:
            self.provides(meta["provides"], root)
        if "meta-spec" in meta:
            self.meta_spec(meta["meta-spec"])
        if "tags" in meta:
            if not isinstance(meta["tags"], list) or not meta["tags"]:
                self.err("tags", "a non-empty list")
            else:
                for i, t in enumerate(meta["tags"]):
                    self.tag(f"tags[{i}]", t)
        if "no_index" in meta:
            self.no_index(meta["no_index"])
        if "prereqs" in meta:
            self.prereqs(meta["prereqs"])
        if "release_status" in meta and meta["release_status"] not in ("stable", "testing", "unstable"):
            self.err("release_status", f"{meta['release_status']!r}: stable, testing or unstable")
        if "resources" in meta:
            self.resources(meta["resources"])

    # -- payflow's own agreement between its version numbers ---------------
    def versions(self, meta, root):
        control = os.path.join(root, "payflow.control")
        m = re.search(r"^\s*default_version\s*=\s*'([^']*)'", open(control).read(), re.M)
        if not m:
            self.err("payflow.control", "no default_version")
            return
        default = m.group(1)
        parts = default.split(".")
        want = ".".join(parts + ["0"] * (3 - len(parts)))
        if meta.get("version") != want:
            self.err("version", f"{meta.get('version')!r}, but payflow.control's default_version "
                                f"{default!r} makes {want!r}")
        ext = meta.get("provides", {}).get("payflow") if isinstance(meta.get("provides"), dict) else None
        if not isinstance(ext, dict):
            self.err("provides", "does not provide the extension payflow")
        elif ext.get("version") != want:
            self.err("provides.payflow.version", f"{ext.get('version')!r}, want {want!r}")
        changelog = os.path.join(root, "debian", "changelog")
        if os.path.isfile(changelog):
            first = open(changelog).readline()
            dm = re.match(r"^\S+ \((?:\d+:)?([^)-]+)(?:-[^)]*)?\)", first)
            if not dm or dm.group(1) != want:
                self.err("debian/changelog", f"upstream version {dm.group(1) if dm else '?'!r}, want {want!r}")


def check(meta, root):
    c = Checker()
    c.document(meta, root)
    if isinstance(meta, dict):
        c.versions(meta, root)
    return c.errors


# Ways to break a valid document, each of which the checker must refuse.
def breakages(meta):
    def without(key):
        def f(m):
            del m[key]
        return f

    def setter(path, value):
        def f(m):
            node = m
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = value
        return f

    ext = next(iter(meta["provides"]))
    cases = [(f"no {k}", without(k)) for k in REQUIRED]
    cases += [
        ("a two-part version", setter(["version"], "1.1")),
        ("a version with a leading zero", setter(["version"], "1.01.0")),
        ("a name with a space", setter(["name"], "pay flow")),
        ("a one-letter name", setter(["name"], "p")),
        ("an empty abstract", setter(["abstract"], "")),
        ("an empty maintainer list", setter(["maintainer"], [])),
        ("a license the spec does not name", setter(["license"], "beerware")),
        ("a license object whose value is no URI", setter(["license"], {"PostgreSQL": "licence"})),
        ("an unknown top-level key", setter(["homepage"], "https://example.org/")),
        ("a custom key without x_", setter(["mykey"], 1)),
        ("no extension in provides", setter(["provides"], {})),
        ("an extension without file", lambda m: m["provides"][ext].pop("file")),
        ("an extension without version", lambda m: m["provides"][ext].pop("version")),
        ("an extension with an unknown key", setter(["provides", ext, "control"], "x")),
        ("an extension file that is not there", setter(["provides", ext, "file"], "sql/nothere.sql")),
        ("an absolute extension file", setter(["provides", ext, "file"], "/etc/passwd")),
        ("meta-spec 2.0.0", setter(["meta-spec", "version"], "2.0.0")),
        ("a meta-spec url that is not the spec's", setter(["meta-spec", "url"], "https://example.org/")),
        ("an empty tag", setter(["tags"], [""])),
        ("a tag with a slash", setter(["tags"], ["a/b"])),
        ("release_status beta", setter(["release_status"], "beta")),
        ("a prereq phase the spec does not name", setter(["prereqs"], {"install": {"requires": {"PostgreSQL": "15.0.0"}}})),
        ("a prereq relation the spec does not name", setter(["prereqs"], {"runtime": {"needs": {"PostgreSQL": "15.0.0"}}})),
        ("a prereq version range that is not one", setter(["prereqs"], {"runtime": {"requires": {"PostgreSQL": "15"}}})),
        ("no_index with neither file nor directory", setter(["no_index"], {})),
        ("a version that is not payflow.control's", setter(["version"], "9.9.9")),
        ("an extension version that is not payflow.control's", setter(["provides", ext, "version"], "1.0.0")),
    ]
    return cases


def selftest(path):
    meta = json.load(open(path))
    root = os.path.dirname(os.path.abspath(path))
    cases = breakages(meta)
    print(f"1..{len(cases) + 1}")
    failed = 0
    errors = check(meta, root)
    print(("ok" if not errors else "not ok") + f" 1 - {os.path.basename(path)} as committed is valid")
    for e in errors:
        print(f"#   {e}")
    failed += bool(errors)
    for i, (name, breakage) in enumerate(cases, start=2):
        broken = copy.deepcopy(meta)
        breakage(broken)
        errors = check(broken, root)
        print(("ok" if errors else "not ok") + f" {i} - refused: {name}"
              + (f" ({errors[0]})" if errors else ""))
        failed += not errors
    return 1 if failed else 0


def main(argv):
    if argv and argv[0] == "--selftest":
        return selftest(argv[1] if len(argv) > 1 else "META.json")
    path = argv[0] if argv else "META.json"
    try:
        meta = json.load(open(path))
    except (OSError, ValueError) as e:
        print(f"{path} is invalid: {e}")
        return 1
    errors = check(meta, os.path.dirname(os.path.abspath(path)))
    if errors:
        print(f"{path} is invalid against the PGXN Meta Spec 1.0 or payflow's versions:")
        for e in errors:
            print(f"  {e}")
        return 1
    print(f"{path} is OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
