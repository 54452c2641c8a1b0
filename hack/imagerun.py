#!/usr/bin/env python3
"""Run a command inside a locally built image's root filesystem, as a container would, without a daemon.

    hack/imagerun.py [options] IMAGE [ARG...]

IMAGE is an image in the buildah store that hack/images.sh builds into ($MD_IMAGE_STORE, default
$MD_CACHE/containers, i.e. ~/.cache/modeldeploy/containers), by name (``ghcr.io/modeldeploy/optimizer:0.1.0``) or
by target (``optimizer``, ``operator``: $IMAGE_REPO/<target>:<version in pyproject.toml>).

What the process gets, the way a kubelet with a container runtime would give it:

* the image's root filesystem as ``/``: a fresh buildah working container of the image, mounted (overlay) and
  removed afterwards, so writes to a writable root are thrown away with it. ``--read-only`` makes ``/``
  read-only (``readOnlyRootFilesystem``); then the only writable places are the ``--volume`` mounts;
* ``--volume HOST:CONTAINER[:ro]`` bind mounts (a file or a directory; the mount point is made in the working
  container when the image lacks it), ``/proc`` of its own PID namespace, a small ``/dev`` (null, zero, full,
  random, urandom, tty, shm as tmpfs, fd links), ``/sys`` read-only, and the host's ``/etc/hosts`` and
  ``/etc/resolv.conf`` read-only;
* the user ``--user UID[:GID]`` (default: the image's USER, which must be numeric), supplementary groups from
  ``--group-add``, no capabilities (a non-zero uid after setuid has none) and ``no_new_privs``; ``--fs-group
  GID`` also gives the writable volumes that group with the setgid bit, like the kubelet does for fsGroup;
* the environment of the image (its ENV: PATH, VIRTUAL_ENV, TF_USE_LEGACY_KERAS, ...) overlaid with ``--env
  NAME=VALUE``, or ``--env NAME`` for the value NAME has in the caller's environment (as ``docker run -e NAME``:
  secrets then stay out of command lines), HOSTNAME set; nothing else from the caller's environment;
* the command: ``--entrypoint`` replaces the image's ENTRYPOINT (Kubernetes' ``command``; repeat it for a
  command with several words), the ARGs replace its CMD (Kubernetes' ``args``); the working directory is the
  image's WORKDIR or ``--workdir``;
* the host's network (as pods of the local cluster's runner have: they listen on loopback addresses), its own
  mount and PID namespaces: when the command exits, everything it started is killed.

The exit code is the command's (128+N when killed by signal N). SIGTERM, SIGINT, SIGHUP, SIGQUIT and SIGUSR1/2
to this process are passed to the command (as PID 1 of its namespace it gets them only if it handles them, as
in a container). SIGKILL to this process kills the command and everything it started too (parent-death
signals down the chain); the working container is removed at the end, or, after a SIGKILL, by the next run.

Why this way, on this machine: Debian's buildah (1.28) builds the images with chroot isolation, but ``buildah run``
has no read-only root, and its OCI isolation needs an OCI runtime with cgroups, which did not start here
(issue 15). So this tool uses buildah only for storage (``buildah from`` + ``buildah mount``) and sets up the
namespaces itself: ``unshare --mount --pid --fork`` (util-linux), the mounts above, ``chroot``, then
setgroups/setgid/setuid and exec, in this file (the ``_inner`` half). It needs root.

Limits (it is a test tool, not a container runtime): no cgroup limits (memory, CPU), no seccomp profile, no
network or IPC namespace, no user namespace (uid 65532 inside is uid 65532 outside), chroot instead of
pivot_root (harmless for a process without capabilities), no image pulling (build with ``make images``).

Python use: ``argv(...)`` returns the command line for subprocess (the caller keeps the pid, can signal it and
reads its output).
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONTAINER_PREFIX = "imagerun-"
MIDDLE_SPEC = "IMAGERUN_SPEC"
HOST_ENV = ("PATH", "HOME", "MD_CACHE", "MD_IMAGE_STORE", "IMAGE_REPO")   # what imagerun itself reads
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")


def store() -> pathlib.Path:
    """The buildah store hack/images.sh uses."""
    if os.environ.get("MD_IMAGE_STORE"):
        return pathlib.Path(os.environ["MD_IMAGE_STORE"])
    cache = os.environ.get("MD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "modeldeploy")
    return pathlib.Path(cache) / "containers"


def buildah(*args: str, check: bool = True) -> str:
    """buildah on hack/images.sh's store; stdout stripped."""
    s = store()
    proc = subprocess.run(["buildah", "--root", str(s / "storage"), "--runroot", str(s / "run"), *args],
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def image_ref(name: str) -> str:
    """A target name (operator, optimizer) as hack/images.sh tags it; anything else as it is."""
    if "/" in name or ":" in name:
        return name
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    return f"{os.environ.get('IMAGE_REPO', 'ghcr.io/modeldeploy')}/{name}:{version[1] if version else 'latest'}"


def parse_user(user: str) -> tuple[int, int | None]:
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise SystemExit(f"imagerun: user {user!r} must be numeric UID[:GID] (the images' USER is numeric)")
    return int(uid), int(gid) if gid else None


def parse_volume(spec: str) -> dict:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[1].startswith("/") or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise SystemExit(f"imagerun: --volume {spec!r} is not HOST:/CONTAINER[:ro|rw]")
    host = os.path.abspath(parts[0])
    if not os.path.exists(host):
        raise SystemExit(f"imagerun: --volume {spec!r}: {host} does not exist")
    return {"host": host, "path": os.path.normpath(parts[1]), "ro": len(parts) == 3 and parts[2] == "ro"}


def merge_env(image_env: list[str], overrides: list[str]) -> dict:
    env = dict(e.split("=", 1) for e in image_env if "=" in e)
    for item in overrides:
        k, eq, v = item.partition("=")
        if not k:
            raise SystemExit(f"imagerun: --env {item!r} is not NAME=VALUE or NAME")
        if eq:
            env[k] = v
        elif k in os.environ:               # --env NAME: the caller's value, never seen on a command line
            env[k] = os.environ[k]
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return env


def argv(image: str, args: list[str] | None = None, *, entrypoint: list[str] | None = None,
         user: str | None = None, group_add: list[int] = (), fs_group: int | None = None,
         env: list[str] = (), volumes: list[str] = (), read_only: bool = False, workdir: str | None = None,
         hostname: str | None = None) -> list[str]:
    """The command line that runs `entrypoint + args` in `image` (the CLI's options as keywords)."""
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve())]
    if entrypoint is not None:
        cmd += [x for e in entrypoint for x in ("--entrypoint", e)]
    if user:
        cmd += ["--user", user]
    cmd += [x for g in group_add for x in ("--group-add", str(g))]
    if fs_group is not None:
        cmd += ["--fs-group", str(fs_group)]
    cmd += [x for e in env for x in ("--env", e)]
    cmd += [x for v in volumes for x in ("--volume", v)]
    if read_only:
        cmd.append("--read-only")
    if workdir:
        cmd += ["--workdir", workdir]
    if hostname:
        cmd += ["--hostname", hostname]
    return cmd + ["--", image] + list(args or [])


def local_image(name: str) -> dict | None:
    """The image `name` names in the store, as {"ref", "id", "config"}; None when it is not there (or there is no
    buildah): the local cluster's runner then plays the container with host processes."""
    ref = image_ref(name)
    try:
        out = buildah("inspect", "--type", "image", ref, check=False)
    except FileNotFoundError:
        return None
    try:
        data = json.loads(out)
    except ValueError:
        return None
    return {"ref": ref, "id": data["FromImageID"], "config": (data.get("OCIv1") or {}).get("config") or {}}


def security(pod_spec: dict, container: dict) -> dict:
    """The pod's and the container's securityContext merged as a kubelet merges them (the container's wins):
    uid/gid (None: the image's USER), fs_group, supplemental groups, read_only root, non_root."""
    psc, csc = pod_spec.get("securityContext") or {}, container.get("securityContext") or {}

    def pick(key):
        return csc.get(key, psc.get(key))
    return {"uid": pick("runAsUser"), "gid": pick("runAsGroup"), "fs_group": psc.get("fsGroup"),
            "groups": list(psc.get("supplementalGroups") or []), "non_root": bool(pick("runAsNonRoot")),
            "read_only": bool(csc.get("readOnlyRootFilesystem"))}


def effective_user(sec: dict, image_user: str) -> tuple[int, int]:
    """(uid, gid) the container runs as: the securityContext's, else the image's USER (numeric here)."""
    uid, gid = parse_user(image_user or "0")
    if sec["uid"] is not None:
        uid, gid = sec["uid"], None
    if sec["gid"] is not None:
        gid = sec["gid"]
    return uid, uid if gid is None else gid


def pod_container_argv(image: str, container: dict, sec: dict, user: tuple[int, int], *, env: dict[str, str],
                       volumes: list[str], hostname: str | None = None) -> list[str]:
    """The command line that runs one container of a pod in `image` as a kubelet would: ``command`` replaces
    the ENTRYPOINT and ``args`` the CMD (both already expanded), as `user` with the pod's groups and fsGroup,
    readOnlyRootFilesystem, the variables `env` names and `volumes` (HOST:/CONTAINER[:ro], for the volumeMounts
    and the termination-message file). Only the names are on the command line: the caller runs it with `env`'s
    values in its environment (Secret values must not show in a process list or a log)."""
    return argv(image, list(container.get("args") or []), entrypoint=container.get("command") or None,
                user=f"{user[0]}:{user[1]}", group_add=sec["groups"], fs_group=sec["fs_group"],
                env=[k if k not in HOST_ENV else f"{k}={v}" for k, v in env.items()], volumes=volumes,
                read_only=sec["read_only"], workdir=container.get("workingDir"), hostname=hostname)


def process_env(env: dict[str, str]) -> dict[str, str]:
    """The environment to run pod_container_argv's command line with: what imagerun itself reads from this
    process, and the values of the container's variables (named on the command line)."""
    own = {k: os.environ[k] for k in HOST_ENV if k in os.environ}
    own["MD_IMAGE_STORE"] = str(store())       # not from the container's HOME or MD_CACHE
    return {**own, **{k: v for k, v in env.items() if k not in HOST_ENV}}


def remove_stale_containers() -> None:
    """Working containers of runs whose supervisor died (their pid is in the name) are removed."""
    out = buildah("containers", "--format", "{{.ContainerName}}", check=False)
    for name in out.split():
        m = re.fullmatch(rf"{CONTAINER_PREFIX}(\d+)-\w+", name)
        if m and not os.path.exists(f"/proc/{m[1]}"):
            buildah("umount", name, check=False)
            buildah("rm", name, check=False)


# --- the namespaces: a middle process in new mount (and UTS) namespaces; its child is PID 1 of a new PID one ---

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWPID = 0x00020000, 0x04000000, 0x20000000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _die_with_parent() -> None:
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def _unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                       data.encode() if data else None), f"mount {source} on {target} ({fstype}, {flags:#x})")


def _bind(source: str, target: str, ro: bool) -> None:
    _mount(source, target, None, MS_BIND | MS_REC)
    if ro:
        _mount("none", target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def in_root(root: str, path: str) -> str:
    """`path` inside the image's root with symlinks resolved as the container sees them: an absolute link target
    counts from the root (Debian's /var/run -> /run), and ".." never climbs above it (what runc's securejoin
    does). Missing components are kept as they are."""
    parts, resolved, hops = [p for p in path.split("/") if p], [], 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            resolved = resolved[:-1]
            continue
        host = os.path.join(root, *resolved, part)
        if os.path.islink(host):
            hops += 1
            if hops > 40:
                raise SystemExit(f"imagerun: too many symlinks under {path} in the image")
            link = os.readlink(host)
            parts = [p for p in link.split("/") if p] + parts
            if link.startswith("/"):
                resolved = []
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _mountpoint(root: str, path: str, is_dir: bool) -> str:
    """The mount point for `path` in the image's root (in_root), made as a directory or an empty file when
    missing."""
    target = in_root(root, path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if is_dir:
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        open(target, "a").close()
    return target


def container_init(spec: dict) -> None:
    """PID 1 of the new PID namespace, still root in the host's filesystem: mounts, chroot, drop, exec."""
    root = spec["root"]
    _bind(root, root, ro=False)                        # a mount of its own, to remount read-only at the end
    _mount("proc", _mountpoint(root, "/proc", True), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _bind("/sys", _mountpoint(root, "/sys", True), ro=True)
    dev = _mountpoint(root, "/dev", True)
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=65536k")
    for node in DEV_NODES:
        if os.path.exists(f"/dev/{node}"):
            _bind(f"/dev/{node}", _mountpoint(root, f"/dev/{node}", False), ro=False)
    os.makedirs(f"{dev}/shm")
    _mount("tmpfs", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=65536k")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")
    for etc in ("/etc/hosts", "/etc/resolv.conf"):
        if os.path.isfile(etc):
            _bind(etc, _mountpoint(root, etc, False), ro=True)
    # Shallow paths first, so /a/b mounts over /a.
    for vol in sorted(spec["volumes"], key=lambda v: v["path"].count("/")):
        _bind(vol["host"], _mountpoint(root, vol["path"], os.path.isdir(vol["host"])), ro=vol["ro"])
    if spec["read_only"]:
        _mount("none", root, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    os.chroot(root)
    os.chdir(spec["workdir"])
    os.setgroups(sorted({spec["gid"], *spec["groups"]}))
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])                             # a non-zero uid keeps no capabilities
    _die_with_parent()                                 # again: changing the uid cleared it
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    os.umask(0o022)
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_DFL)
    command = spec["command"]
    try:
        os.execvpe(command[0], command, spec["env"])
    except OSError as e:
        print(f"imagerun: cannot run {command[0]!r} in the image: {e.strerror}", file=sys.stderr)
        os._exit(127 if isinstance(e, FileNotFoundError) else 126)


def middle(spec: dict) -> int:
    """In the new mount namespace (made by the supervisor's preexec): make the mounts private, fork PID 1 of a
    new PID namespace, pass signals to it and exit with its status (128+N for signal N)."""
    _mount("none", "/", None, MS_REC | MS_PRIVATE)
    if spec.get("hostname"):
        _check(_libc.sethostname(spec["hostname"].encode(), len(spec["hostname"])), "sethostname")
    _unshare(CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        try:
            _die_with_parent()
            container_init(spec)
        except BaseException as e:   # noqa: BLE001 (report anything, never return into the parent's code)
            print(f"imagerun: setting up the container failed: {e}", file=sys.stderr)
        os._exit(125)
    for sig in FORWARDED:
        signal.signal(sig, lambda signum, _frame: os.kill(pid, signum))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


# --- the supervisor: the working container, the middle process, clean-up ----------------------------------


def run(opts: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise SystemExit("imagerun: needs root (mounts, chroot, setuid), as a container runtime does")
    image = local_image(opts.image)
    if image is None:
        raise SystemExit(f"imagerun: no image {image_ref(opts.image)} in {store()}: build it with `make images`")
    ref, config = image["ref"], image["config"]
    entrypoint = opts.entrypoint if opts.entrypoint is not None else (config.get("Entrypoint") or [])
    args = opts.args if (opts.args or opts.entrypoint is not None) else (config.get("Cmd") or [])
    command = list(entrypoint) + list(args)
    if not command:
        raise SystemExit(f"imagerun: {ref} has no ENTRYPOINT or CMD and no command was given")
    uid, gid = parse_user(opts.user or config.get("User") or "0")
    if gid is None:
        gid = uid
    volumes = [parse_volume(v) for v in opts.volume]
    env = merge_env(config.get("Env") or [], opts.env)
    env.setdefault("HOSTNAME", opts.hostname or os.uname().nodename)
    if opts.fs_group is not None:
        for vol in volumes:
            if not vol["ro"] and os.path.isdir(vol["host"]):
                os.chown(vol["host"], -1, opts.fs_group)
                os.chmod(vol["host"], os.stat(vol["host"]).st_mode | 0o2070)
    remove_stale_containers()
    name = f"{CONTAINER_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    buildah("from", "--pull-never", "--quiet", "--name", name, ref)
    try:
        spec = {"root": buildah("mount", name), "volumes": volumes, "read_only": opts.read_only,
                "uid": uid, "gid": gid,
                "groups": opts.group_add + ([opts.fs_group] if opts.fs_group is not None else []),
                "workdir": opts.workdir or config.get("WorkingDir") or "/", "env": env, "command": command,
                "hostname": opts.hostname}
        flags = CLONE_NEWNS | (CLONE_NEWUTS if opts.hostname else 0)

        def preexec() -> None:
            _die_with_parent()
            _unshare(flags)
        # The spec (environment values included) goes through the middle's environment, not its command line.
        child = subprocess.Popen([sys.executable, "-I", str(pathlib.Path(__file__).resolve()), "--_middle"],
                                 env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), MIDDLE_SPEC: json.dumps(spec)},
                                 preexec_fn=preexec)
        for sig in FORWARDED:
            signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
        code = child.wait()
        return 128 - code if code < 0 else code
    finally:
        buildah("umount", name, check=False)
        buildah("rm", name, check=False)


def main() -> int:
    if sys.argv[1:] == ["--_middle"]:
        return middle(json.loads(os.environ.pop(MIDDLE_SPEC)))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring (hack/imagerun.py) for what the process gets.")
    p.add_argument("image", help="image name, or a target of hack/images.sh (operator, optimizer)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="replace the image's CMD")
    p.add_argument("--entrypoint", action="append", help="replace the image's ENTRYPOINT (repeat for each word)")
    p.add_argument("--user", "-u", help="UID[:GID] (default: the image's USER)")
    p.add_argument("--group-add", type=int, action="append", default=[], help="a supplementary group id")
    p.add_argument("--fs-group", type=int, help="a supplementary group that owns the writable volumes")
    p.add_argument("--env", "-e", action="append", default=[],
                   help="NAME=VALUE over the image's ENV; NAME alone takes this process's value")
    p.add_argument("--volume", "-v", action="append", default=[], help="HOST:/CONTAINER[:ro]")
    p.add_argument("--read-only", action="store_true", help="the root filesystem is read-only")
    p.add_argument("--workdir", "-w", help="working directory (default: the image's WORKDIR)")
    p.add_argument("--hostname", help="hostname in a UTS namespace of its own")
    opts = p.parse_args()
    if opts.args[:1] == ["--"]:
        opts.args = opts.args[1:]
    return run(opts)


if __name__ == "__main__":
    sys.exit(main())
