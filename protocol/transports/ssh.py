"""ssh://USER@HOST[:PORT]/STORE_DIR: ship over SSH with paramiko (imported lazily).

The host key must already be in the known_hosts file (RejectPolicy: an unknown or changed key
is an error, never silently accepted). The manifest is uploaded first and checked on the device
by `binsort-edge install --check-only`, so a refused model costs no payload upload. The payload
goes by SFTP to STORE_DIR/partial/SHA.ssh.partial, resuming after what is already there (stat +
seek); then `binsort-edge install --move` checks every hash and installs it through the same
SlotStore checks as the TCP and serial receiver. A payload that fails its hashes is deleted on
the device, so the next ship starts it again. When a slot on the device already holds the
payload (a rollback to the other slot, or the same model again), the check says so and nothing
is uploaded.
"""

import os
import shlex

from protocol.errors import BinsortError, bounded
from protocol.session import RemoteError
from protocol.transports import after_scheme

BLOCK = 32768


def _paramiko():
    try:
        import paramiko
    except ImportError:
        raise BinsortError("ssh:// links need paramiko: pip install paramiko") from None
    return paramiko


def parse(url: str) -> "tuple[str, str, int, str]":
    """(user, host, port, store dir)."""
    rest = after_scheme(url, "ssh")
    where, slash, path = rest.partition("/")
    user, at, hostport = where.rpartition("@")
    host, colon, port = hostport.partition(":")
    if not at or not user or not host or not slash or not path or (colon and not port.isdigit()):
        raise BinsortError("%s: an SSH link is ssh://USER@HOST[:PORT]/STORE_DIR" % url)
    return user, host, int(port) if colon else 22, "/" + path.rstrip("/")


def connect(url: str, options: dict):
    """An SSHClient connected with the host key pinned from known_hosts."""
    paramiko = _paramiko()
    user, host, port, _ = parse(url)
    known = os.path.expanduser(options.get("known_hosts") or "~/.ssh/known_hosts")
    target = host if port == 22 else "[%s]:%d" % (host, port)
    client = paramiko.SSHClient()
    try:
        client.load_host_keys(known)
    except Exception as e:  # OSError, text that is not UTF-8, a line paramiko cannot parse
        raise BinsortError(
            "cannot read known_hosts %s (%s): add the device's host key first, after checking "
            "its fingerprint: ssh-keyscan -p %d %s >> %s" % (known, bounded(e), port, host, known)
        ) from None
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    key = options.get("ssh_key")
    if key and not os.path.isfile(os.path.expanduser(key)):
        raise BinsortError("ssh key %s does not exist" % key)
    try:
        client.connect(
            host,
            port,
            user,
            key_filename=os.path.expanduser(key) if key else None,
            look_for_keys=not key,
            allow_agent=not key,
            timeout=10,
            banner_timeout=10,
            auth_timeout=10,
        )
    except paramiko.BadHostKeyException:
        client.close()
        raise BinsortError(
            "the host key of %s does not match %s: the device was reinstalled, or someone is "
            "in between; check before you replace the key" % (target, known)
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        raise BinsortError(
            "SSH authentication failed for %s@%s (pass the right --ssh-key, or add your public "
            "key to the device's authorized_keys)" % (user, target)
        ) from None
    except paramiko.SSHException as e:
        client.close()
        if "not found in known_hosts" in str(e):
            raise BinsortError(
                "unknown host key for %s: it is not in %s; check its fingerprint and add it: "
                "ssh-keyscan -p %d %s >> %s" % (target, known, port, host, known)
            ) from None
        raise BinsortError("SSH to %s failed: %s" % (target, e)) from None
    except ValueError as e:  # a key file that is not text: paramiko lets UnicodeError out
        client.close()
        which = "ssh key %s" % key if key else "the ssh keys in ~/.ssh"
        raise BinsortError("cannot use %s: %s" % (which, bounded(e))) from None
    except OSError as e:
        client.close()
        raise BinsortError(
            "cannot connect to %s:%d: %s (is sshd running there, and is the port right?)"
            % (host, port, getattr(e, "strerror", None) or e)
        ) from None
    return client


def _run(client, command: str) -> "tuple[int, str, str]":
    _, stdout, stderr = client.exec_command(command)
    out = stdout.read().decode("utf-8", "replace")
    err = stderr.read().decode("utf-8", "replace")
    return stdout.channel.recv_exit_status(), out, err


def _remote(client, options: dict, args: list) -> dict:
    import json

    cmd = options.get("remote_command") or "binsort-edge"
    status, out, err = _run(client, cmd + " " + " ".join(shlex.quote(a) for a in args))
    if status == 127:
        raise BinsortError(
            "`%s` was not found on the device: install binsort there, or pass "
            "--remote-command with its path" % cmd
        )
    if status != 0:
        last = (err.strip().splitlines() or ["exit status %d" % status])[-1]
        raise RemoteError("the device refused the model: %s" % last.split("error: ", 1)[-1])
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError, RecursionError):
        raise BinsortError("unexpected answer from the device: %r" % out[-200:]) from None


def ship(url: str, manifest: bytes, payload: bytes, options: dict) -> dict:
    """Upload and install; a dropped connection is reopened (up to options['reconnects']
    times) and the upload resumes after what reached the device."""
    paramiko = _paramiko()
    reconnects = int(options.get("reconnects", 20))
    drops = 0
    while True:
        client = connect(url, options)
        try:
            return _ship_once(client, url, manifest, payload, options)
        except (OSError, EOFError, paramiko.SSHException) as e:
            drops += 1
            if drops > reconnects:
                raise BinsortError("SSH link to %s kept dropping: %s" % (url, e)) from None
            if options.get("on_reconnect"):
                options["on_reconnect"](drops, str(e) or type(e).__name__)
        finally:
            client.close()


def _ship_once(client, url: str, manifest: bytes, payload: bytes, options: dict) -> dict:
    from protocol.manifest import parse_manifest

    _, _, _, store = parse(url)
    progress = options.get("progress") or (lambda acked, size: None)
    sftp = client.open_sftp()
    sha = parse_manifest(manifest).sha256  # the payload's: a rollback may not carry it
    base = store + "/partial/" + sha
    mpath, ppath = base + ".ssh.manifest", base + ".ssh.partial"
    try:
        with sftp.open(mpath, "wb") as f:
            f.write(manifest)
    except OSError as e:
        raise BinsortError(
            "cannot write to %s on the device (%s): is it a store made with "
            "`binsort-edge store --init`?" % (store, e)
        ) from None
    check = ["install", "--store", store, "--manifest", mpath, "--check-only"]
    if _remote(client, options, check).get("held"):  # a slot has these bytes: none to upload
        progress(len(payload), len(payload))
        result = _remote(client, options, ["install", "--store", store, "--manifest", mpath])
        sftp.remove(mpath)
        return result
    try:
        offset = sftp.stat(ppath).st_size
    except OSError:
        offset = 0
    if offset > len(payload):
        offset = 0
    with sftp.open(ppath, "r+b" if offset else "wb") as f:
        f.seek(offset)
        f.set_pipelined(True)
        progress(offset, len(payload))
        while offset < len(payload):
            f.write(payload[offset : offset + BLOCK])
            offset = min(len(payload), offset + BLOCK)
            progress(offset, len(payload))
        f.truncate(len(payload))
    result = _remote(
        client,
        options,
        ["install", "--store", store, "--manifest", mpath, "--payload", ppath, "--move"],
    )
    sftp.remove(mpath)
    return result
