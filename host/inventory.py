"""Ansible inventories (INI or YAML) read into devices for `binsort ship --fleet` and
`binsort fleet`, so one inventory serves provisioning (tools/ansible) and shipping.

What is read of Ansible's format: groups, `[group:vars]` and `[group:children]` (INI) or
`hosts:`, `vars:` and `children:` (YAML), host variables, and host ranges such as
`pi-[01:08]` or `pi-[a:c]`. Variables apply as Ansible applies them: `all` first, then groups
from the outermost to the innermost (by depth, then name), then the host's own. What binsort
takes from a host's variables:

    binsort_url          where models are shipped (any `binsort ship --to` URL); default
                         tcp://HOST:7600, HOST being `ansible_host` or the inventory name
    binsort_status       the daemon's status endpoint; default http://HOST:8080
"""

import os
import re
import shlex

from protocol.errors import BinsortError

SHIP_PORT = 7600  # edge.toml's [receiver] listen
STATUS_PORT = 8080  # edge.toml's [status] listen
RANGE = re.compile(r"\[([0-9]+|[a-z]):([0-9]+|[a-z])(?::([0-9]+))?\]")


class Device:
    """One host of an inventory: its name, where to ship, where its status is, its variables."""

    def __init__(self, name: str, variables: dict):
        self.name = name
        self.vars = variables
        host = str(variables.get("ansible_host") or name)
        self.url = str(variables.get("binsort_url") or "tcp://%s:%d" % (host, SHIP_PORT))
        status = str(variables.get("binsort_status") or "http://%s:%d" % (host, STATUS_PORT))
        self.status = status.rstrip("/")

    def __repr__(self):
        return "Device(%r, %r, %r)" % (self.name, self.url, self.status)


class Inventory:
    def __init__(self, path: str):
        self.path = path
        self.groups = {"all": _group(), "ungrouped": _group()}
        self.host_vars = {}  # name -> its own variables, in the order hosts first appear

    # -- reading ----------------------------------------------------------------------------

    def host(self, name: str, variables: dict, group: str) -> None:
        if not name.isprintable() or any(c.isspace() for c in name):  # a binary file, say
            raise BinsortError("%s: %r is not a host name" % (self.path, name[:40]))
        self.host_vars.setdefault(name, {}).update(variables)
        hosts = self.group(group)["hosts"]
        if name not in hosts:
            hosts.append(name)

    def group(self, name: str) -> dict:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise BinsortError("%s: %r is not a group name" % (self.path, name))
        return self.groups.setdefault(name, _group())

    # -- answers ----------------------------------------------------------------------------

    def members(self, name: str) -> list:
        """The hosts of a group and of all its children, in inventory order."""
        if name not in self.groups:
            known = sorted(g for g in self.groups if g != "ungrouped" or self.groups[g]["hosts"])
            raise BinsortError(
                "%s has no group %r (groups: %s)" % (self.path, name, ", ".join(known))
            )
        if name == "all":
            return list(self.host_vars)
        found, seen, todo = [], set(), [name]
        while todo:
            g = todo.pop(0)
            if g in seen:
                continue
            seen.add(g)
            found += [h for h in self.groups[g]["hosts"] if h not in found]
            todo += self.groups[g]["children"]
        return found

    def variables(self, host: str) -> dict:
        depth = self._depths()
        mine = [g for g in self.groups if g != "all" and host in self.members(g)]
        out = dict(self.groups["all"]["vars"])
        for g in sorted(mine, key=lambda g: (depth.get(g, 1), g)):
            out.update(self.groups[g]["vars"])
        out.update(self.host_vars[host])
        return out

    def devices(self, group: str = "all") -> list:
        hosts = self.members(group)
        if not hosts:
            raise BinsortError("%s: group %r has no hosts" % (self.path, group))
        return [Device(h, self.variables(h)) for h in hosts]

    def device(self, name: str) -> Device:
        if name not in self.host_vars:
            raise BinsortError(
                "%s has no host %r (hosts: %s)"
                % (self.path, name, ", ".join(list(self.host_vars)[:20]))
            )
        return Device(name, self.variables(name))

    def _depths(self) -> dict:
        """How deep each group sits under `all` (a group nobody lists as a child: 1)."""
        parents = {}
        for g, rec in self.groups.items():
            for c in rec["children"]:
                parents.setdefault(c, []).append(g)
        depth = {}

        def of(g, trail=()):
            if g in depth:
                return depth[g]
            if g in trail:  # a cycle of children: Ansible refuses it too
                raise BinsortError("%s: group %r is its own child" % (self.path, g))
            ups = [p for p in parents.get(g, []) if p != "all"]
            depth[g] = 1 + max((of(p, trail + (g,)) for p in ups), default=0)
            return depth[g]

        for g in self.groups:
            if g != "all":
                of(g)
        return depth


def _group() -> dict:
    return {"hosts": [], "vars": {}, "children": []}


def read_inventory(path: str) -> Inventory:
    """An Ansible inventory file: YAML when it ends in .yml/.yaml (or starts like YAML's
    `all:`), INI otherwise. BinsortError, naming the file and line, for anything else."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise BinsortError("inventory %s does not exist" % path) from None
    except IsADirectoryError:
        raise BinsortError("inventory %s is a folder; give the inventory file" % path) from None
    except (OSError, UnicodeError) as e:
        raise BinsortError("cannot read inventory %s: %s" % (path, e)) from None
    inv = Inventory(path)
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()[:1] not in ("", "#")), "")
    if path.endswith((".yml", ".yaml")) or re.match(r"^[A-Za-z0-9_.-]+:\s*$", first):
        _read_yaml(inv, text)
    else:
        _read_ini(inv, text)
    if not inv.host_vars:
        raise BinsortError("inventory %s lists no hosts" % path)
    return inv


def _read_ini(inv: Inventory, text: str) -> None:
    group, part = "ungrouped", "hosts"
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        where = "%s line %d" % (inv.path, n)
        if line.startswith("["):
            if not line.endswith("]"):
                raise BinsortError(
                    "%s: a section is [GROUP], [GROUP:vars] or [GROUP:children]" % where
                )
            group, _, part = line[1:-1].strip().partition(":")
            part = part or "hosts"
            if part not in ("hosts", "vars", "children"):
                raise BinsortError("%s: unknown section kind %r" % (where, part))
            inv.group(group)
            continue
        if part == "vars":
            key, eq, value = line.partition("=")
            if not eq or not key.strip():
                raise BinsortError("%s: a [%s:vars] line is NAME=VALUE" % (where, group))
            inv.group(group)["vars"][key.strip()] = _value(value.strip(), where)
        elif part == "children":
            child = line.split()[0]
            inv.group(child)
            if child not in inv.group(group)["children"]:
                inv.group(group)["children"].append(child)
        else:
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError as e:
                raise BinsortError("%s: %s" % (where, e)) from None
            variables = {}
            for tok in tokens[1:]:
                key, eq, value = tok.partition("=")
                if not eq or not key:
                    raise BinsortError("%s: host variables are NAME=VALUE, not %r" % (where, tok))
                variables[key] = value
            for name in expand(tokens[0], where):
                inv.host(name, variables, group)


def _value(text: str, where: str) -> str:
    """A [group:vars] value: quotes removed as Ansible removes them."""
    try:
        parts = shlex.split(text, comments=True)
    except ValueError as e:
        raise BinsortError("%s: %s" % (where, e)) from None
    return " ".join(parts)


def expand(pattern: str, where: str) -> list:
    """Host names of an Ansible host range: pi-[01:03] -> pi-01, pi-02, pi-03."""
    m = RANGE.search(pattern)
    if not m:
        if "[" in pattern or "]" in pattern:
            raise BinsortError("%s: %r is not a host range like pi-[01:08]" % (where, pattern))
        return [pattern]
    lo, hi, step = m.group(1), m.group(2), int(m.group(3) or 1)
    head, tail = pattern[: m.start()], pattern[m.end() :]
    if lo.isdigit() != hi.isdigit() or step < 1:
        raise BinsortError("%s: %r is not a host range like pi-[01:08]" % (where, pattern))
    if lo.isdigit():
        width = len(lo) if lo.startswith("0") else 0
        items = ["%0*d" % (width, i) for i in range(int(lo), int(hi) + 1, step)]
    else:
        items = [chr(c) for c in range(ord(lo), ord(hi) + 1, step)]
    if not items:
        raise BinsortError("%s: the host range %r is empty" % (where, pattern))
    return [name for item in items for name in expand(head + item + tail, where)]


def _read_yaml(inv: Inventory, text: str) -> None:
    try:
        import yaml
    except ImportError:
        raise BinsortError("YAML inventories need PyYAML: pip install pyyaml") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = " line %d" % (mark.line + 1) if mark is not None else ""
        raise BinsortError("%s%s: not valid YAML" % (inv.path, at)) from None
    if not isinstance(doc, dict):
        raise BinsortError("%s: a YAML inventory is a mapping of groups (all: ...)" % inv.path)
    for name, node in doc.items():
        _yaml_group(inv, str(name), node)


def _yaml_group(inv: Inventory, name: str, node, trail=()) -> None:
    where = "%s: group %r" % (inv.path, name)
    if name in trail:
        raise BinsortError("%s is its own child" % where)
    inv.group(name)
    if node is None:
        return
    if not isinstance(node, dict):
        raise BinsortError("%s: expected hosts:, vars: or children:" % where)
    unknown = set(node) - {"hosts", "vars", "children"}
    if unknown:
        raise BinsortError("%s: unknown key %r" % (where, sorted(map(str, unknown))[0]))
    hosts = node.get("hosts") or {}
    variables = node.get("vars") or {}
    children = node.get("children") or {}
    for what, v in (("hosts", hosts), ("vars", variables), ("children", children)):
        if not isinstance(v, dict):
            raise BinsortError("%s: %s must be a mapping" % (where, what))
    inv.group(name)["vars"].update({str(k): v for k, v in variables.items()})
    for pattern, hvars in hosts.items():
        if hvars is not None and not isinstance(hvars, dict):
            raise BinsortError("%s: host %r: its variables must be a mapping" % (where, pattern))
        for host in expand(str(pattern), where):
            inv.host(host, {str(k): v for k, v in (hvars or {}).items()}, name)
    for child, sub in children.items():
        if str(child) not in inv.group(name)["children"]:
            inv.group(name)["children"].append(str(child))
        _yaml_group(inv, str(child), sub, trail + (name,))


def default_inventory() -> "str | None":
    """$BINSORT_INVENTORY, when set."""
    return os.environ.get("BINSORT_INVENTORY") or None
