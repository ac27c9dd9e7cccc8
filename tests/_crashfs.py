"""Power-cut crash states: record a command's file-system operations, rebuild what a power cut may leave.

`kill -9` loses nothing the process wrote: the page cache outlives it. A power cut
loses what was not yet on disk, and a file system may have put some later
operations on disk before some earlier ones. This module builds those states.

Recording. The command runs under `strace -f` (every process and thread it starts:
git, DVC, SQLite inside MLflow's database) with the file-system system calls traced
and every written byte printed in hex. `copy_file_range` and `sendfile` are made to
fail with ENOSYS (strace's fault injection), so mlvs and Python fall back to
`pwrite`/`write` and the bytes copied appear in the trace; that fallback is the
one they take on any file system without those calls. Only paths inside the
workspace are kept: the project files, `.git/` (objects, refs, index), `.mlvs/`
(journal, staging, spares, the local DVC remote, backups), `.dvc/cache` and
`mlflow.db` with its `-journal` (SQLite's own crash protocol runs on the same
model as everything else: its writes, fsyncs and the deletion of its journal).

The model: ext4 with `data=ordered` (the default), taken at its weakest, and what
POSIX promises.
- Directory operations (create, mkdir, rename, link, symlink, unlink, rmdir) are
  journalled by ext4 in the order they were made: what survives is a prefix of
  them. Any fsync or fdatasync (of a file or of a directory) commits the
  journal, so every directory operation before it survives. POSIX promises less
  (a rename is durable once its directory is fsynced); ext4 gives this much, and
  the harness takes no more.
- File data is written back when the kernel chooses (delayed allocation): the
  bytes written to a file that were not yet fsynced may be lost, from some write
  on, and the first write lost may be torn (a prefix of it on disk). data=ordered
  never exposes stale blocks, so what survives of a file is its writes up to a
  point, in order. An fsync or fdatasync of the file makes all its earlier writes
  survive; so does `sync`/`syncfs`, and a write through an `O_SYNC`/`O_DSYNC`
  descriptor is durable when it returns.
- Data and directory operations are not ordered with each other unless an fsync
  orders them: a rename may survive while the data of the renamed file does not
  (a zero-length or short file under the new name: ext4's `auto_da_alloc`
  heuristic, which flushes a file renamed over another, is not counted on).
- Write-back is by page (4 KiB), and the kernel may write a file's dirty pages in
  any order: one page may reach the disk holding the file's later writes while
  another still holds its earlier ones. So a file's unsynced writes may also
  survive out of order, page by page: each page holds the file as it was after
  some number of its writes (at least the synced ones), pages independently; the
  file keeps the size its writes gave it, and what a page does not yet hold reads
  as zeros (delayed allocation leaves no stale blocks).
- Truncation (`O_TRUNC`, `ftruncate`) is taken as one more write to the file, and
  `fallocate` (mode 0) as one that extends the size with zeros. A file whose
  unsynced writes include a truncation is not reordered (the size change orders them).

Not modelled: partial directory-operation survival inside one operation (ext4
journals each one atomically), and reflink or mmap writes (none are made here).

A crash state is (k, m, d, tear, pages): the command had issued its first k
operations; the first m of its directory operations survived (at least those
before the last fsync before k); of each file, its writes up to d[file] survived
(at least those before its last fsync), and the next one is cut at `tear` bytes;
`pages` lists the pages of a file written back out of order, each with the
number of the file's writes it holds. Two crash states are the same when the
trees they build are byte for byte the same; the tests count distinct trees.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

STRACE = "/usr/bin/strace"
TRACED = (
    "open,openat,creat,write,pwrite64,writev,pwritev,pwritev2,lseek,"
    "fsync,fdatasync,sync,syncfs,sync_file_range,"
    "rename,renameat,renameat2,unlink,unlinkat,rmdir,mkdir,mkdirat,"
    "link,linkat,symlink,symlinkat,truncate,ftruncate,fallocate,"
    "chdir,fchdir,clone,clone3,fork,vfork,copy_file_range,sendfile"
)
AT_FDCWD = -100
O_WRONLY, O_RDWR, O_CREAT, O_EXCL, O_TRUNC, O_APPEND = 0o1, 0o2, 0o100, 0o200, 0o1000, 0o2000
O_DSYNC, O_TMPFILE_BIT = 0o10000, 0o20000000
AT_REMOVEDIR = 0x200
CLONE_FILES, CLONE_FS, CLONE_THREAD = 0x400, 0x200, 0x10000
RENAME_EXCHANGE = 0x2
PAGE = 4096  # the unit of write-back


class UnmodelledCall(RuntimeError):
    """Raised when a traced command does something to the workspace the model does not cover."""


# --- the recorded operations -------------------------------------------------------------


@dataclass(frozen=True)
class Meta:
    """A directory operation: `kind` is create, mkdir, rename, link, symlink, unlink or rmdir."""

    kind: str
    path: str  # the name made, moved to or removed
    source: str = ""  # rename and link: the old name; symlink: the target
    inode: int = -1  # create and link: the file


@dataclass(frozen=True)
class Write:
    """Bytes written to a file at an offset; `size` set instead for a truncation."""

    inode: int
    offset: int
    data: bytes = b""
    size: int | None = None

    def __repr__(self) -> str:
        if self.size is not None:
            return f"Truncate(file {self.inode} to {self.size})"
        return f"Write(file {self.inode}, {len(self.data)} bytes at {self.offset})"


@dataclass(frozen=True)
class Sync:
    """fsync/fdatasync of a file (`inode`) or a directory (`inode` -1), or `sync`/`syncfs` (`everything`)."""

    inode: int = -1
    everything: bool = False


Event = Meta | Write | Sync


@dataclass
class Trace:
    """The workspace operations of one command, in the order they completed."""

    root: Path
    events: list[Event]
    initial: dict[str, int]  # file path -> inode id (the files that existed before)
    initial_dirs: set[str]
    initial_links: dict[str, str]

    @property
    def summary(self) -> str:
        kinds: dict[str, int] = {}
        for event in self.events:
            key = event.kind if isinstance(event, Meta) else type(event).__name__.lower()
            kinds[key] = kinds.get(key, 0) + 1
        return ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))


# --- strace output ----------------------------------------------------------------------

_LINE = re.compile(r"^(\d+)\s+(.*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)\) += (-?\d+|\?)(?:<((?:\\x[0-9a-f]{2})*)>)?(.*)$", re.S)
_HEX = re.compile(r"((?:\\x[0-9a-f]{2})*)")


def _unhex(text: str) -> bytes:
    return bytes.fromhex(text.replace("\\x", ""))


_QUOTED = re.compile(r'"[^"]*"(?:\.\.\.)?')


def _split_args(text: str) -> list[str]:
    """Top-level arguments of a call, split at commas outside quotes and brackets.

    With `-xx` every byte of a string is escaped (a quote too), so a string is
    everything between two quotes: they are set aside first, and the short rest is
    split character by character.
    """
    strings: list[str] = []

    def aside(match: re.Match[str]) -> str:
        strings.append(match.group(0))
        return f"\0{len(strings) - 1}\0"

    short = _QUOTED.sub(aside, text)
    args, depth, start = [], 0, 0
    for i, char in enumerate(short):
        if char in "[{<(":
            depth += 1
        elif char in "]}>)":
            depth -= 1
        elif char == "," and depth == 0:
            args.append(short[start:i].strip())
            start = i + 1
    tail = short[start:].strip()
    if tail:
        args.append(tail)
    return [re.sub(r"\0(\d+)\0", lambda m: strings[int(m.group(1))], arg) for arg in args]


def _string(arg: str) -> str:
    """The text of a quoted, hex-escaped argument."""
    match = re.fullmatch(r'"((?:\\x[0-9a-f]{2})*)"(\.\.\.)?', arg)
    if match is None:
        raise UnmodelledCall(f"not a string argument: {arg[:80]}")
    if match.group(2):
        raise UnmodelledCall("a string was cut short: raise strace's -s")
    return _unhex(match.group(1)).decode("utf-8", "surrogateescape")


def _data(arg: str) -> bytes:
    match = re.fullmatch(r'"((?:\\x[0-9a-f]{2})*)"(\.\.\.)?', arg)
    if match is None or match.group(2):
        raise UnmodelledCall(f"written bytes not shown in full: {arg[:80]}")
    return _unhex(match.group(1))


def _fd(arg: str) -> tuple[int, str | None]:
    """A descriptor argument: its number and the path strace decoded for it."""
    match = re.fullmatch(r"(-?\d+)(?:<((?:\\x[0-9a-f]{2})*)>)?", arg)
    if match is None:
        raise UnmodelledCall(f"not a descriptor argument: {arg[:80]}")
    path = _unhex(match.group(2)).decode("utf-8", "surrogateescape") if match.group(2) else None
    return int(match.group(1)), path


def _int(arg: str) -> int:
    arg = arg.strip("[]")
    return int(arg, 0)


@dataclass
class _Call:
    pid: int
    name: str
    args: list[str]
    ret: int | None
    ret_path: str | None


def parse_strace(text: str) -> Iterator[_Call]:
    """The completed calls of an `strace -f -o FILE -y -xx -X raw` log, in completion order."""
    pending: dict[int, str] = {}
    for raw in text.splitlines():
        match = _LINE.match(raw)
        if match is None:
            continue
        pid, rest = int(match.group(1)), match.group(2)
        if rest.startswith("+++") or rest.startswith("---"):
            continue
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")].rstrip()
            continue
        resumed = _RESUMED.match(rest)
        if resumed is not None:
            rest = pending.pop(pid, resumed.group(1) + "(") + resumed.group(2).lstrip()
        call = _CALL.match(rest)
        if call is None:
            continue
        ret = None if call.group(3) == "?" else int(call.group(3))
        ret_path = (
            _unhex(call.group(4)).decode("utf-8", "surrogateescape")
            if call.group(4) is not None
            else None
        )
        yield _Call(pid, call.group(1), _split_args(call.group(2)), ret, ret_path)


# --- from calls to workspace events -----------------------------------------------------


@dataclass
class _Process:
    cwd: str
    files: dict[int, tuple[int, int]]  # fd -> (inode, flags)
    offsets: dict[int, int]  # fd -> file offset (shared by threads through `files`' owner)


@dataclass
class _Builder:
    root: str
    names: dict[str, int]
    dirs: set[str]
    links: dict[str, str]
    sizes: dict[int, int] = field(default_factory=dict)
    next_inode: int = 0
    events: list[Event] = field(default_factory=list)
    processes: dict[int, _Process] = field(default_factory=dict)
    parents: dict[int, tuple[int, int]] = field(default_factory=dict)  # child -> (parent, flags)
    initial_sizes: dict[int, int] = field(default_factory=dict)

    def inside(self, path: str | None) -> str | None:
        """The workspace-relative form of an absolute path, or None outside it (and for the root)."""
        if path is None:
            return None
        path = path.removesuffix(" (deleted)")
        if path == self.root:
            return ""  # the workspace's own directory (its fsync counts)
        if path.startswith(self.root + "/"):
            rel = path[len(self.root) + 1 :]
            return None if "__pycache__" in rel.split("/") else rel
        return None

    def process(self, pid: int) -> _Process:
        if pid not in self.processes:
            parent, flags = self.parents.get(pid, (None, 0))
            if parent is not None:
                mother = self.process(parent)
                self.processes[pid] = _Process(
                    mother.cwd,
                    mother.files if flags & CLONE_FILES else dict(mother.files),
                    mother.offsets if flags & CLONE_FILES else dict(mother.offsets),
                )
            else:
                self.processes[pid] = _Process(self.root, {}, {})
        return self.processes[pid]

    def resolve(self, pid: int, dirfd: str | None, name: str) -> str:
        if name.startswith("/"):
            return os.path.normpath(name)
        base = self.process(pid).cwd
        if dirfd is not None:
            number, path = _fd(dirfd)
            if path is not None:
                base = path
                if number == AT_FDCWD:
                    self.process(pid).cwd = path
        return os.path.normpath(os.path.join(base, name))

    def inode_of(self, pid: int, fd_arg: str) -> tuple[int | None, int, int]:
        """(inode, flags, fd) of a descriptor argument inside the workspace; inode None outside."""
        number, path = _fd(fd_arg)
        rel = self.inside(path)
        if rel is None:
            return None, 0, number
        opened = self.process(pid).files.get(number)
        if opened is not None:
            return opened[0], opened[1], number
        if rel in self.names:
            return self.names[rel], O_WRONLY, number
        if rel in self.dirs or rel == "":
            return -1, 0, number
        raise UnmodelledCall(f"a descriptor of {rel} that was never opened")

    def new_inode(self) -> int:
        self.next_inode += 1
        return 1_000_000 + self.next_inode  # above every inode id of the files there before

    def meta(self, event: Meta) -> None:
        self.events.append(event)
        _apply_meta(self.names, self.dirs, self.links, event)

    def write(self, inode: int, offset: int, data: bytes) -> None:
        self.events.append(Write(inode, offset, data))
        self.sizes[inode] = max(self.sizes.get(inode, 0), offset + len(data))

    def feed(self, call: _Call) -> None:
        pid, name, args = call.pid, call.name, call.args
        if name in ("clone", "clone3", "fork", "vfork"):
            if call.ret is not None and call.ret > 0:
                flags = 0
                found = re.search(r"flags=(0x[0-9a-f]+|\d+)", ",".join(args))
                if found:
                    flags = int(found.group(1), 0)
                self.parents[call.ret] = (pid, flags)
            return
        if call.ret is not None and call.ret < 0:
            return  # failed (or injected to fail): no effect
        proc = self.process(pid)
        if name in ("chdir", "fchdir"):
            if name == "chdir":
                proc.cwd = self.resolve(pid, None, _string(args[0]))
            else:
                path = _fd(args[0])[1]
                if path:
                    proc.cwd = path
            return
        if name in ("open", "openat", "creat"):
            if name == "openat":
                dirfd, path_arg, flags = args[0], args[1], _int(args[2])
            elif name == "open":
                dirfd, path_arg, flags = None, args[0], _int(args[1])
            else:
                dirfd, path_arg, flags = None, args[0], O_WRONLY | O_CREAT | O_TRUNC
            full = call.ret_path or self.resolve(pid, dirfd, _string(path_arg))
            rel = self.inside(full)
            if rel is None or call.ret is None:
                return
            if flags & O_TMPFILE_BIT and flags & O_CREAT == 0 and rel in self.dirs:
                raise UnmodelledCall(f"O_TMPFILE in {rel}")
            if rel in self.dirs or rel == "":
                proc.files[call.ret] = (-1, flags)
                return
            if rel not in self.names:
                if not flags & O_CREAT:
                    return
                inode = self.new_inode()
                self.meta(Meta("create", rel, inode=inode))
            inode = self.names[rel]
            writable = flags & (O_WRONLY | O_RDWR)
            if writable and flags & O_TRUNC:
                self.events.append(Write(inode, 0, size=0))
                self.sizes[inode] = 0
            proc.files[call.ret] = (inode, flags)
            proc.offsets[call.ret] = 0
            return
        if name in ("write", "pwrite64"):
            inode, flags, number = self.inode_of(pid, args[0])
            if inode is None or call.ret is None:
                return
            data = _data(args[1])[: call.ret]
            if name == "pwrite64":
                offset = _int(args[3])
            elif flags & O_APPEND:
                offset = self.sizes.get(inode, self._initial_size(inode))
            else:
                # Reads are not traced: a read-write descriptor is taken as written front to
                # back from where it was opened or last sought (the lock holder file, SQLite's
                # pwrite aside, is the only one seen).
                offset = proc.offsets.get(number, 0)
                proc.offsets[number] = offset + len(data)
            self.sizes.setdefault(inode, self._initial_size(inode))
            self.write(inode, offset, data)
            if flags & O_DSYNC:
                self.events.append(Sync(inode))
            return
        if name == "fallocate":
            inode, _, _ = self.inode_of(pid, args[0])
            if inode is None:
                return
            mode, offset, length = _int(args[1]), _int(args[2]), _int(args[3])
            if mode != 0:
                raise UnmodelledCall(f"fallocate mode {mode} into the workspace")
            size = max(self._initial_size(inode), offset + length)
            self.events.append(Write(inode, 0, size=size))
            self.sizes[inode] = size
            return
        if name in ("writev", "pwritev", "pwritev2", "copy_file_range", "sendfile"):
            inode, _, _ = self.inode_of(pid, args[2] if name == "copy_file_range" else args[0])
            if inode is not None:
                raise UnmodelledCall(f"{name} into the workspace")
            return
        if name == "lseek":
            inode, _, number = self.inode_of(pid, args[0])
            if inode is not None and call.ret is not None:
                proc.offsets[number] = call.ret
            return
        if name in ("fsync", "fdatasync", "sync_file_range"):
            inode, _, _ = self.inode_of(pid, args[0])
            if inode is None:
                return
            if name == "sync_file_range":
                return  # starts write-back, promises nothing
            self.events.append(Sync(inode))
            return
        if name in ("sync", "syncfs"):
            self.events.append(Sync(everything=True))
            return
        if name in ("ftruncate", "truncate"):
            if name == "ftruncate":
                inode, _, _ = self.inode_of(pid, args[0])
            else:
                rel = self.inside(self.resolve(pid, None, _string(args[0])))
                inode = self.names.get(rel) if rel is not None else None
            if inode is None:
                return
            size = _int(args[1])
            self.events.append(Write(inode, 0, size=size))
            self.sizes[inode] = size
            return
        if name in ("rename", "renameat", "renameat2"):
            if name == "rename":
                old = self.resolve(pid, None, _string(args[0]))
                new = self.resolve(pid, None, _string(args[1]))
            else:
                old = self.resolve(pid, args[0], _string(args[1]))
                new = self.resolve(pid, args[2], _string(args[3]))
                exchange = name == "renameat2" and _int(args[4]) & RENAME_EXCHANGE
                if exchange and self.inside(old) is not None:
                    raise UnmodelledCall("RENAME_EXCHANGE in the workspace")
            rold, rnew = self.inside(old), self.inside(new)
            if rold is None and rnew is None:
                return
            if rold is None or rnew is None:
                raise UnmodelledCall(f"a rename across the workspace's edge: {old} -> {new}")
            self.meta(Meta("rename", rnew, source=rold))
            return
        if name in ("link", "linkat"):
            if name == "link":
                old = self.resolve(pid, None, _string(args[0]))
                new = self.resolve(pid, None, _string(args[1]))
            else:
                old = self.resolve(pid, args[0], _string(args[1]))
                new = self.resolve(pid, args[2], _string(args[3]))
            rold, rnew = self.inside(old), self.inside(new)
            if rnew is None:
                return
            if rold is None or rold not in self.names:
                raise UnmodelledCall(f"a hard link into the workspace from {old}")
            self.meta(Meta("link", rnew, source=rold, inode=self.names[rold]))
            return
        if name in ("symlink", "symlinkat"):
            target = _string(args[0])
            if name == "symlink":
                where = self.resolve(pid, None, _string(args[1]))
            else:
                where = self.resolve(pid, args[1], _string(args[2]))
            rel = self.inside(where)
            if rel is not None:
                self.meta(Meta("symlink", rel, source=target))
            return
        if name in ("unlink", "unlinkat", "rmdir"):
            if name == "unlinkat":
                where = self.resolve(pid, args[0], _string(args[1]))
                removedir = bool(_int(args[2]) & AT_REMOVEDIR)
            else:
                where = self.resolve(pid, None, _string(args[0]))
                removedir = name == "rmdir"
            rel = self.inside(where)
            if rel is not None:
                self.meta(Meta("rmdir" if removedir else "unlink", rel))
            return
        if name in ("mkdir", "mkdirat"):
            if name == "mkdir":
                where = self.resolve(pid, None, _string(args[0]))
            else:
                where = self.resolve(pid, args[0], _string(args[1]))
            rel = self.inside(where)
            if rel is not None:
                self.meta(Meta("mkdir", rel))
            return

    def _initial_size(self, inode: int) -> int:
        return self.sizes.get(inode, self.initial_sizes.get(inode, 0))


def _apply_meta(names: dict[str, int], dirs: set[str], links: dict[str, str], event: Meta) -> None:
    """Apply one directory operation to a tree of names (files, directories, symlinks)."""
    kind, path = event.kind, event.path
    if kind == "create" or kind == "link":
        names[path] = event.inode
    elif kind == "mkdir":
        dirs.add(path)
    elif kind == "symlink":
        links[path] = event.source
    elif kind == "unlink":
        names.pop(path, None)
        links.pop(path, None)
    elif kind == "rmdir":
        dirs.discard(path)
    elif kind == "rename":
        source = event.source
        if source in dirs:
            prefix = source + "/"
            for table in (names, links):
                for key in [k for k in table if k.startswith(prefix)]:
                    table[path + "/" + key[len(prefix) :]] = table.pop(key)  # type: ignore[index]
            for key in [k for k in dirs if k == source or k.startswith(prefix)]:
                dirs.discard(key)
                dirs.add(path + key[len(source) :])
        elif source in links:
            names.pop(path, None)
            links[path] = links.pop(source)
        elif source in names:
            links.pop(path, None)
            names[path] = names.pop(source)


def scan_tree(root: Path) -> tuple[dict[str, int], set[str], dict[str, str], dict[int, int]]:
    """Files (path -> inode id, the id being the file's position), directories, symlinks and sizes under `root`."""
    names: dict[str, int] = {}
    dirs: set[str] = set()
    links: dict[str, str] = {}
    sizes: dict[int, int] = {}
    for directory, subdirs, files in os.walk(root):
        rel_dir = os.path.relpath(directory, root)
        prefix = "" if rel_dir == "." else rel_dir + "/"
        for sub in list(subdirs):
            full = os.path.join(directory, sub)
            if os.path.islink(full):
                links[prefix + sub] = os.readlink(full)
                subdirs.remove(sub)
            elif sub != "__pycache__":
                dirs.add(prefix + sub)
        for name in files:
            full = os.path.join(directory, name)
            if os.path.islink(full):
                links[prefix + name] = os.readlink(full)
            else:
                inode = len(names) + 1
                names[prefix + name] = inode
                sizes[inode] = os.stat(full).st_size
    return names, dirs, links, sizes


def record(root: Path, argv: list[str], env: Mapping[str, str], log: Path) -> Trace:
    """Run `argv` in `root` under strace and return its workspace operations.

    `log` (outside `root`) receives strace's output. The command must succeed.
    """
    root = root.resolve()
    names, dirs, links, sizes = scan_tree(root)
    command = [
        STRACE,
        "-f",
        "-qq",
        "--seccomp-bpf",
        "-y",
        "-xx",
        "-X",
        "raw",
        "-s",
        str(64 << 20),
        "-e",
        f"trace={TRACED}",
        "-e",
        "inject=copy_file_range,sendfile:error=ENOSYS",
        "-o",
        str(log),
        *argv,
    ]
    done = subprocess.run(command, cwd=root, env=dict(env), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed under strace: {done.stderr[-2000:]}")
    builder = _Builder(str(root), dict(names), set(dirs), dict(links))
    builder.initial_sizes = dict(sizes)
    calls = list(parse_strace(log.read_text(encoding="ascii", errors="replace")))
    # A child's first calls may be logged before its parent's clone returns: parents first.
    for call in calls:
        if call.name in ("clone", "clone3", "fork", "vfork") and call.ret and call.ret > 0:
            builder.feed(call)
    for call in calls:
        if call.name not in ("clone", "clone3", "fork", "vfork"):
            builder.feed(call)
    return Trace(root, builder.events, names, dirs, links)


# --- the durable states ------------------------------------------------------------------


@dataclass(frozen=True)
class CrashState:
    """What survived a power cut after the command's first `issued` operations."""

    issued: int
    meta_kept: int  # how many directory operations survived
    kept: tuple[tuple[int, int, int], ...]  # (inode, writes kept, bytes kept of the next one or -1)
    # Pages written back out of order: (inode, page, how many of the file's writes it holds).
    pages: tuple[tuple[int, int, int], ...] = ()

    def describe(self, trace: Trace) -> str:
        last = trace.events[self.issued - 1] if self.issued else None
        paths = {inode: path for path, inode in trace.initial.items()}
        paths.update(
            {e.inode: e.path for e in trace.events if isinstance(e, Meta) and e.kind == "create"}
        )
        if isinstance(last, (Write, Sync)) and last.inode in paths:
            last = f"{last!r} of {paths[last.inode]}"
        torn = [f"{i}:{n}+{t}" for i, n, t in self.kept if t >= 0]
        behind = sorted({paths.get(i, str(i)) for i, _, _ in self.pages})
        return (
            f"after {self.issued} of {len(trace.events)} operations (last: {last}), "
            f"{self.meta_kept} directory operations survived"
            + (f", torn writes {torn}" if torn else "")
            + (
                f", {len(self.pages)} page(s) of {', '.join(behind)} written back out of order"
                if behind
                else ""
            )
        )


@dataclass
class Tree:
    """A durable tree: files (their bytes, or the id of a file there before and unchanged), directories, symlinks."""

    files: dict[str, bytes | int]
    dirs: set[str]
    links: dict[str, str]

    def digest(self) -> str:
        h = hashlib.sha256()
        for path in sorted(self.files):
            content = self.files[path]
            h.update(b"f" + path.encode("utf-8", "surrogateescape") + b"\0")
            if isinstance(content, int):
                h.update(b"i%d" % content)
            else:
                h.update(hashlib.sha256(content).digest())
        for path in sorted(self.dirs):
            h.update(b"d" + path.encode("utf-8", "surrogateescape") + b"\0")
        for path, target in sorted(self.links.items()):
            h.update(b"l" + f"{path}\0{target}\0".encode("utf-8", "surrogateescape"))
        return h.hexdigest()


class CrashModel:
    """The crash states of one trace under the model of the module docstring."""

    def __init__(self, trace: Trace, before: Path) -> None:
        self.trace = trace
        self.before = before  # a copy of the workspace taken just before the command
        self.meta_positions = [i for i, e in enumerate(trace.events) if isinstance(e, Meta)]
        self.writes: dict[int, list[int]] = {}
        for i, event in enumerate(trace.events):
            if isinstance(event, Write):
                self.writes.setdefault(event.inode, []).append(i)
        self.touched = {
            p for e in trace.events if isinstance(e, Meta) for p in (e.path, e.source) if p
        }
        self._initial_bytes: dict[int, bytes] = {}
        self._paths_of_initial = {inode: path for path, inode in trace.initial.items()}

    def _floors(self, issued: int) -> tuple[int, dict[int, int]]:
        """Directory operations and writes per file that must have survived a cut after `issued`."""
        meta_floor, data_floor = 0, {}
        last_any = -1
        everything = -1
        for i in range(issued):
            event = self.trace.events[i]
            if isinstance(event, Sync):
                last_any = i
                if event.everything:
                    everything = i
                elif event.inode >= 0:
                    data_floor[event.inode] = i
        meta_floor = sum(1 for p in self.meta_positions if p < last_any)
        floors = {}
        for inode, positions in self.writes.items():
            synced = max(data_floor.get(inode, -1), everything)
            floors[inode] = sum(1 for p in positions if p < synced)
        return meta_floor, floors

    def issued_counts(self, issued: int) -> tuple[int, dict[int, int]]:
        meta = sum(1 for p in self.meta_positions if p < issued)
        return meta, {
            inode: sum(1 for p in positions if p < issued)
            for inode, positions in self.writes.items()
        }

    def variants(self, issued: int, rng: random.Random) -> list[CrashState]:
        """The corner states of a cut after `issued` operations, and a random one in between."""
        meta_floor, floors = self._floors(issued)
        meta_all, alls = self.issued_counts(issued)
        pending = [i for i in alls if alls[i] > floors[i]]

        def state(meta: int, pick: Mapping[int, tuple[int, int]]) -> CrashState:
            kept = tuple(sorted((i, n, t) for i, (n, t) in pick.items() if alls.get(i)))
            return CrashState(issued, meta, kept)

        everything = {i: (alls[i], -1) for i in alls}
        synced_only = {i: (floors[i], -1) for i in alls}
        out = [
            state(meta_all, everything),  # what kill -9 leaves
            state(meta_floor, synced_only),  # only what was flushed
            state(meta_all, synced_only),  # names ahead of data: a rename before its bytes
            state(meta_floor, everything),
        ]
        pick = {}
        for inode in alls:
            n = rng.randint(floors[inode], alls[inode])
            tear = -1
            if n < alls[inode] and rng.random() < 0.5:
                event = self.trace.events[self.writes[inode][n]]
                assert isinstance(event, Write)
                if event.size is None and len(event.data) > 1:
                    tear = rng.randrange(1, len(event.data))
            pick[inode] = (n, tear)
        out.append(state(rng.randint(meta_floor, meta_all), pick))
        if pending:
            # One file's unsynced writes lost, everything else there: the file a crash hurts most.
            victim = rng.choice(sorted(pending))
            one = dict(everything)
            one[victim] = (floors[victim], -1)
            out.append(state(meta_all, one))
            # The same file's pages written back out of order, everything else there.
            pages = self._pages_out_of_order(victim, floors[victim], alls[victim], rng)
            if pages:
                reordered = state(meta_all, everything)
                out.append(CrashState(issued, meta_all, reordered.kept, pages))
        return out

    def _pages_out_of_order(
        self, inode: int, floor: int, issued: int, rng: random.Random
    ) -> tuple[tuple[int, int, int], ...]:
        """Some pages of `inode`'s unsynced writes left holding fewer of them than the pages around."""
        unsynced = [self.trace.events[p] for p in self.writes[inode][floor:issued]]
        if len(unsynced) < 2 or any(
            not isinstance(w, Write) or w.size is not None for w in unsynced
        ):
            return ()  # one write is the tear's case; a truncation orders the writes around it
        touched = sorted(
            {
                page
                for w in unsynced
                if isinstance(w, Write) and w.data
                for page in range(w.offset // PAGE, (w.offset + len(w.data) - 1) // PAGE + 1)
            }
        )
        if len(touched) < 2:
            return ()
        behind = rng.sample(touched, rng.randint(1, max(1, len(touched) // 2)))
        return tuple(sorted((inode, page, rng.randint(floor, issued - 1)) for page in behind))

    def _base(self, inode: int) -> bytes:
        if inode not in self._initial_bytes:
            path = self._paths_of_initial.get(inode)
            self._initial_bytes[inode] = (self.before / path).read_bytes() if path else b""
        return self._initial_bytes[inode]

    def tree(self, crash: CrashState) -> Tree:
        """The durable tree of `crash`, as far as the command touched it (other files are as before)."""
        trace = self.trace
        names, dirs, links = dict(trace.initial), set(trace.initial_dirs), dict(trace.initial_links)
        for position in self.meta_positions[: crash.meta_kept]:
            event = trace.events[position]
            assert isinstance(event, Meta)
            _apply_meta(names, dirs, links, event)
        kept = {inode: (n, t) for inode, n, t in crash.kept}
        behind: dict[int, dict[int, list[int]]] = {}  # inode -> writes held -> pages
        for inode, page, holds in crash.pages:
            behind.setdefault(inode, {}).setdefault(holds, []).append(page)
        contents: dict[int, bytes] = {}
        for inode in set(names.values()):
            if inode not in self.writes:
                continue
            n, tear = kept.get(inode, (0, -1))
            pages = behind.get(inode, {})
            content = bytearray(self._base(inode))
            held: dict[int, bytes] = {}  # a page behind: the bytes it held after its writes
            for k, position in enumerate(self.writes[inode][: n + (1 if tear >= 0 else 0)]):
                for page in pages.get(k, ()):
                    held[page] = bytes(content[page * PAGE : (page + 1) * PAGE])
                event = trace.events[position]
                assert isinstance(event, Write)
                if event.size is not None:
                    del content[event.size :]
                    content.extend(b"\0" * (event.size - len(content)))
                    continue
                data = event.data[:tear] if k == n else event.data
                end = event.offset + len(data)
                if len(content) < event.offset:
                    content.extend(b"\0" * (event.offset - len(content)))
                content[event.offset : end] = data
            for page, old in held.items():
                # Within the file's size, what the page did not yet hold reads as zeros.
                start = page * PAGE
                span = min(PAGE, max(0, len(content) - start))
                content[start : start + span] = old[:span].ljust(span, b"\0")
            contents[inode] = bytes(content)
        files: dict[str, bytes | int] = {}
        for path, inode in names.items():
            files[path] = contents.get(inode, inode)
        return Tree(files, dirs, links)

    def distinct_states(
        self, count: int, rng: random.Random, seen: set[str] | None = None
    ) -> Iterator[tuple[CrashState, Tree]]:
        """Up to `count` crash states whose trees differ from each other (and from `seen`'s digests)."""
        seen = set() if seen is None else seen
        total = len(self.trace.events)
        cuts = list(range(total + 1))
        rng.shuffle(cuts)
        # Every cut right after a flush or a directory operation first: where order matters.
        found = 0
        tries = 0
        while found < count and tries < count * 20:
            issued = cuts[tries % len(cuts)]
            tries += 1
            for crash in self.variants(issued, rng):
                tree = self.tree(crash)
                digest = tree.digest()
                if digest in seen:
                    continue
                seen.add(digest)
                found += 1
                yield crash, tree
                if found >= count:
                    return


# --- building a state on disk ------------------------------------------------------------


def _stat_key(path: str) -> tuple[int, int, int, int]:
    st = os.lstat(path)
    return (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, st.st_ino)


class Workbench:
    """The workspace directory, put back to the state before the command and then to a crash state.

    Crash states are built where the command ran (absolute paths inside MLflow's
    database and git's files stay right). Putting it back copies only what
    differs from the copy taken before the command, by a stat comparison.
    """

    def __init__(self, root: Path, before: Path) -> None:
        self.root, self.before = root, before
        # The directory itself stays: it may be this process's working directory.
        for entry in os.scandir(root):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        shutil.copytree(before, root, symlinks=True, dirs_exist_ok=True)
        self.baseline = self._scan()

    def _scan(self) -> dict[str, tuple[int, int, int, int]]:
        out = {}
        base = str(self.root)
        for directory, subdirs, files in os.walk(base):
            for name in subdirs + files:
                full = os.path.join(directory, name)
                out[full[len(base) + 1 :]] = _stat_key(full)
            subdirs[:] = [d for d in subdirs if not os.path.islink(os.path.join(directory, d))]
        return out

    def reset(self) -> None:
        """Make the workspace the copy taken before the command again."""
        now = self._scan()
        for rel in sorted(set(now) - set(self.baseline), key=len, reverse=True):
            full = self.root / rel
            if full.is_dir() and not full.is_symlink():
                shutil.rmtree(full)
            elif full.exists() or full.is_symlink():
                full.unlink()
        for rel in sorted(self.baseline, key=len):
            if now.get(rel) == self.baseline[rel]:
                continue
            full, source = self.root / rel, self.before / rel
            kind = self.baseline[rel][0]
            if kind == stat.S_IFDIR:
                if not full.is_dir() or full.is_symlink():
                    if full.exists() or full.is_symlink():
                        full.unlink()
                    full.mkdir(parents=True)
                self.baseline[rel] = _stat_key(str(full))
                continue
            if full.is_dir() and not full.is_symlink():
                shutil.rmtree(full)
            elif full.exists() or full.is_symlink():
                full.unlink()
            full.parent.mkdir(parents=True, exist_ok=True)
            if kind == stat.S_IFLNK:
                os.symlink(os.readlink(source), full)
            else:
                shutil.copy2(source, full)
            self.baseline[rel] = _stat_key(str(full))
        # Directories whose entries changed get a new mtime: take it as the baseline.
        for rel, key in list(self.baseline.items()):
            if key[0] == stat.S_IFDIR:
                self.baseline[rel] = _stat_key(str(self.root / rel))

    def build(self, model: CrashModel, tree: Tree) -> None:
        """Turn the (reset) workspace into the crash state `tree`."""
        trace = model.trace
        before_files = trace.initial
        # What the command never touched is as before; write only what differs.
        for rel in sorted(set(before_files) - set(tree.files)):
            (self.root / rel).unlink(missing_ok=True)
        for rel in sorted(set(trace.initial_links) - set(tree.links)):
            (self.root / rel).unlink(missing_ok=True)
        for rel in sorted(trace.initial_dirs - tree.dirs, key=len, reverse=True):
            shutil.rmtree(self.root / rel, ignore_errors=True)
        for rel in sorted(tree.dirs - trace.initial_dirs, key=len):
            (self.root / rel).mkdir(parents=True, exist_ok=True)
        for rel, target in tree.links.items():
            if trace.initial_links.get(rel) != target:
                (self.root / rel).unlink(missing_ok=True)
                os.symlink(target, self.root / rel)
        for rel, content in tree.files.items():
            if isinstance(content, int):
                if before_files.get(rel) == content:
                    continue  # the same file, untouched, at the same place
                content = model._base(content)
            full = self.root / rel
            full.parent.mkdir(parents=True, exist_ok=True)
            if full.is_symlink():
                full.unlink()
            full.write_bytes(content)
