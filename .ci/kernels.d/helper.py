#!/usr/bin/env python3
"""Host-side helpers for .ci/kernels (stdlib only).

  helper.py artifacts            < cargo-json   -> "name<TAB>kind<TAB>executable" per test binary
  helper.py example NAME         < cargo-json   -> executable of example NAME
  helper.py moddeps MODDIR NAME...              -> module files to insmod, dependencies first
  helper.py cpio ROOTDIR OUTFILE                -> newc cpio archive of ROOTDIR (an initramfs)
  helper.py summarize MATRIXDIR KERNEL_DIR...   -> tables on stdout, summary.md; exit 1 on failure
"""

import json
import os
import re
import stat
import sys


def cargo_messages(stream):
    for line in stream:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            yield json.loads(line)
        except ValueError:
            continue


def cmd_artifacts():
    seen = set()
    for m in cargo_messages(sys.stdin):
        if m.get("reason") != "compiler-artifact":
            continue
        if not (m.get("profile") or {}).get("test") or not m.get("executable"):
            continue
        name = m["target"]["name"]
        kind = ",".join(m["target"].get("kind") or [])
        if name in seen:
            # Same target name for two kinds (a lib and a test): keep both apart.
            name = f"{name}-{kind}"
        seen.add(name)
        print(f"{name}\t{kind}\t{m['executable']}")


def cmd_example(want):
    for m in cargo_messages(sys.stdin):
        if m.get("reason") != "compiler-artifact" or not m.get("executable"):
            continue
        if m["target"]["name"] == want and "example" in (m["target"].get("kind") or []):
            print(m["executable"])
            return
    sys.exit(f"no executable for example {want} in cargo's output")


def norm(name):
    return name.replace("-", "_")


KO_RE = re.compile(r"\.ko(\.(xz|zst|gz))?$")


def ko_bytes(path):
    if path.endswith(".xz"):
        import lzma

        with lzma.open(path) as f:
            return f.read()
    if path.endswith(".gz"):
        import gzip

        with gzip.open(path) as f:
            return f.read()
    if path.endswith(".zst"):
        import subprocess

        return subprocess.run(["zstd", "-qdc", path], check=True, stdout=subprocess.PIPE).stdout
    with open(path, "rb") as f:
        return f.read()


def cmd_moddeps(moddir, names):
    """Prints the module files (relative to moddir) needed for `names`, each after the
    modules it depends on. A Debian linux-image .deb ships no modules.dep (depmod makes it
    at install time), so the dependencies come from each module's own modinfo `depends=`.
    Built-in and absent modules are reported on stderr and skipped (absent is fine:
    crc32c_intel, say, is not a module everywhere)."""
    path_of = {}
    for dirpath, _, files in os.walk(moddir):
        for fn in files:
            if KO_RE.search(fn):
                full = os.path.join(dirpath, fn)
                path_of[norm(KO_RE.sub("", fn))] = os.path.relpath(full, moddir)
    builtin = set()
    bfile = os.path.join(moddir, "modules.builtin")
    if os.path.exists(bfile):
        with open(bfile) as f:
            for line in f:
                builtin.add(norm(KO_RE.sub("", os.path.basename(line.strip()))))
    deps_cache = {}

    def deps(m):
        if m not in deps_cache:
            data = ko_bytes(os.path.join(moddir, path_of[m]))
            found = re.search(rb"(?:^|\x00)depends=([^\x00]*)", data)
            deps_cache[m] = (
                [norm(d) for d in found.group(1).decode().split(",") if d] if found else []
            )
        return deps_cache[m]

    order = []
    done = set()

    def visit(m, stack):
        if m in done or m in stack or m not in path_of:
            return
        for d in deps(m):
            visit(d, stack | {m})
        done.add(m)
        order.append(m)

    for n in names:
        n = norm(n)
        if n in builtin:
            print(f"{n}: built in", file=sys.stderr)
        elif n not in path_of:
            print(f"{n}: not in this kernel", file=sys.stderr)
        else:
            visit(n, set())
    for m in order:
        print(path_of[m])


def cmd_cpio(root, out):
    """A newc cpio archive of root (regular files, directories, symlinks), owned by root."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for n in sorted(dirnames) + sorted(filenames):
            entries.append(os.path.join(dirpath, n))
    ino = 1
    with open(out, "wb") as f:

        def put(name, mode, data, nlink=1):
            nonlocal ino
            nb = name.encode() + b"\0"
            hdr = "070701" + "".join(
                f"{v:08x}"
                for v in (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(nb), 0)
            )
            ino += 1
            f.write(hdr.encode() + nb)
            f.write(b"\0" * ((4 - (110 + len(nb)) % 4) % 4))
            f.write(data)
            f.write(b"\0" * ((4 - len(data) % 4) % 4))

        for p in entries:
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                put(rel, stat.S_IFLNK | 0o777, os.readlink(p).encode())
            elif stat.S_ISDIR(st.st_mode):
                put(rel, stat.S_IFDIR | stat.S_IMODE(st.st_mode), b"", 2)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as g:
                    put(rel, stat.S_IFREG | stat.S_IMODE(st.st_mode), g.read())
        put("TRAILER!!!", 0, b"")


# ---------------------------------------------------------------- summarize

RESULT_RE = re.compile(
    r"^test result: (\w+)\. (\d+) passed; (\d+) failed; (\d+) ignored;", re.M
)
TEST_LINE_RE = re.compile(r"^test (\S+) \.\.\. (ok|FAILED|ignored)", re.M)
RUNNING_RE = re.compile(r"^test (\S+) has been running for over (\d+) seconds", re.M)
FAIL_BLOCK_RE = re.compile(r"^---- (\S+) (stdout|stderr) ----$", re.M)


def read(path, default=""):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return default


def parse_log(text):
    """(passed, failed, ignored, failed_names, hung_names) from a libtest log."""
    passed = failed = ignored = 0
    results = RESULT_RE.findall(text)
    lines = TEST_LINE_RE.findall(text)
    if results:
        for _, p, fl, ig in results:
            passed += int(p)
            failed += int(fl)
            ignored += int(ig)
    else:
        passed = sum(1 for _, r in lines if r == "ok")
        failed = sum(1 for _, r in lines if r == "FAILED")
        ignored = sum(1 for _, r in lines if r == "ignored")
    failed_names = []
    for n, r in lines:
        if r == "FAILED" and n not in failed_names:
            failed_names.append(n)
    # libtest's closing "failures:" list (names indented by 4 spaces).
    for sect in re.finditer(r"^failures:\n((?:    \S+\n)+)", text, re.M):
        for n in sect.group(1).split():
            if n not in failed_names:
                failed_names.append(n)
    finished = {n for n, _ in lines}
    hung = []
    for n, _ in RUNNING_RE.findall(text):
        if n not in finished and n not in hung:
            hung.append(n)
    return passed, failed, ignored, failed_names, hung


def failure_blocks(text, max_lines=60, max_chars=6000):
    """The `---- name stdout ----` blocks, each cut to a sane size."""
    out = []
    starts = list(FAIL_BLOCK_RE.finditer(text))
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        body = text[m.end() + 1 : end]
        cut = body.find("\nfailures:\n")
        if cut >= 0:
            body = body[:cut]
        body = body.rstrip("\n")
        lines = body.split("\n")
        if len(lines) > max_lines:
            lines = lines[:max_lines] + [f"[... {len(lines) - max_lines} more lines cut]"]
        body = "\n".join(lines)
        if len(body) > max_chars:
            body = body[:max_chars] + "\n[... cut]"
        out.append((m.group(1), m.group(0), body))
    return out


def tail(text, n=40):
    lines = text.rstrip("\n").split("\n")
    return "\n".join(lines[-n:])


def kernel_rows(kdir, label, variant):
    """Rows for one run directory (all binaries of one guest, or its io_uring_disabled rerun)."""
    rows = []
    rundir = kdir if variant == "" else os.path.join(kdir, variant)
    planned = read(os.path.join(rundir, ".planned")).split()
    for name in planned:
        log = read(os.path.join(rundir, f"{name}.log"))
        res = read(os.path.join(rundir, f"{name}.result")).split()
        p, fl, ig, fnames, hung = parse_log(log)
        if not res:
            result = "NOT RUN" if not log else "DID NOT FINISH"
            secs = ""
        else:
            rc = int(res[0])
            secs = f"{float(res[1]):.0f}" if len(res) > 1 else ""
            if rc == 0:
                result = "ok"
            elif rc in (124, 137):
                result = "TIMEOUT"
            elif rc > 128:
                result = f"KILLED (signal {rc - 128})"
            else:
                result = f"FAILED (exit {rc})"
        rows.append(
            dict(
                kernel=label,
                variant=variant,
                binary=name,
                result=result,
                passed=p,
                failed=fl,
                ignored=ig,
                fnames=fnames,
                hung=hung,
                secs=secs,
                log=log,
                logpath=os.path.join(rundir, f"{name}.log"),
            )
        )
    return rows


def cmd_summarize(matrix, kdirs):
    all_rows = []
    guests = []
    for kdir in kdirs:
        meta = {}
        for line in read(os.path.join(kdir, ".meta")).splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                meta[k] = v
        label = meta.get("kver") or os.path.basename(kdir)
        done = os.path.exists(os.path.join(kdir, ".done"))
        g = dict(
            label=label,
            short=meta.get("label", label),
            pkg=meta.get("pkg", "?"),
            version=meta.get("version", "?"),
            wall=read(os.path.join(kdir, ".wall")).strip(),
            qemu_rc=read(os.path.join(kdir, ".qemu_rc")).strip(),
            done=done,
            kdir=kdir,
            disabled=None,
        )
        rows = kernel_rows(kdir, label, "")
        dis_state = read(os.path.join(kdir, ".io_uring_disabled")).strip()
        g["disabled_state"] = dis_state
        if dis_state == "ran":
            g["disabled"] = kernel_rows(kdir, label, "io_uring_disabled")
        g["rows"] = rows
        guests.append(g)
        all_rows += rows + (g["disabled"] or [])

    bad = False
    # ---- per binary table
    print()
    print("| kernel | binary | result | tests passed/failed | seconds |")
    print("| --- | --- | --- | --- | --- |")
    for r in all_rows:
        name = r["binary"] + (" [io_uring_disabled=2]" if r["variant"] else "")
        counts = f"{r['passed']}/{r['failed']}"
        if r["ignored"]:
            counts += f" ({r['ignored']} ignored)"
        print(f"| {r['kernel']} | {name} | {r['result']} | {counts} | {r['secs']} |")
        if r["result"] != "ok":
            bad = True

    # ---- failure output for the CI log
    for r in all_rows:
        if r["result"] == "ok":
            continue
        tag = r["binary"] + (" [io_uring_disabled=2]" if r["variant"] else "")
        print()
        print(f"======== {r['kernel']} / {tag}: {r['result']}  ({r['logpath']})")
        if r["hung"]:
            print(f"still running when stopped: {', '.join(r['hung'])}")
        blocks = failure_blocks(r["log"])
        if blocks:
            for _, head, body in blocks[:12]:
                print(head)
                print(body)
            if len(blocks) > 12:
                print(f"[... {len(blocks) - 12} more failure blocks in the log]")
        else:
            print("(no libtest failure blocks; last lines of the log:)")
            print(tail(r["log"]))

    # ---- compact kernel x result table
    md = ["# Kernel matrix", ""]
    md.append("| kernel | package | result | wall |")
    md.append("| --- | --- | --- | --- |")
    for g in guests:
        for variant, rows in (("", g["rows"]), ("io_uring_disabled=2", g["disabled"])):
            if rows is None:
                continue
            total = len(rows)
            okn = sum(1 for r in rows if r["result"] == "ok")
            parts = []
            if not g["done"] and variant == "":
                why = "guest timed out" if g["qemu_rc"] in ("124", "137") else (
                    f"guest did not finish (qemu exit {g['qemu_rc'] or '?'})")
                parts.append(f"**{why}**")
                bad = True
            if okn == total and total and not parts:
                res = f"{okn}/{total} binaries pass"
            else:
                fails = []
                for r in rows:
                    if r["result"] == "ok":
                        continue
                    names = r["fnames"] + [f"{h} (hung)" for h in r["hung"]]
                    detail = f": {', '.join(names)}" if names else ""
                    fails.append(f"{r['binary']} ({r['result']}){detail}")
                res = f"{okn}/{total} binaries pass"
                if fails:
                    res += "; failing: " + "; ".join(fails)
                if parts:
                    res = " ".join(parts) + "; " + res
            kname = g["label"] + (f" [{variant}]" if variant else "")
            wall = f"{g['wall']} s" if g["wall"] and variant == "" else ""
            md.append(f"| {kname} | {g['pkg']} {g['version']} | {res} | {wall} |")
    for g in guests:
        if g["disabled_state"] == "absent":
            md.append("")
            md.append(f"{g['label']}: no kernel.io_uring_disabled sysctl (before 6.6), no rerun.")
    # ---- "verified on": what the engine picked on each kernel (report.txt, from
    # examples/kernel_report) beside the suite's result, for KERNEL_REQUIREMENTS.md.
    md.append("")
    md.append("## Verified on")
    md.append("")
    md.append("| kernel | `Auto` backend | file → socket under `Auto` | socket → socket under `Auto` "
              "| cachestat | io-wq exit-on-idle | suite |")
    md.append("| --- | --- | --- | --- | --- | --- | --- |")
    for g in guests:
        rep = {}
        for line in read(os.path.join(g["kdir"], "report.txt")).splitlines():
            if ": " in line:
                k, v = line.split(": ", 1)
                rep[k.strip()] = v.strip()
        for variant, rows in (("", g["rows"]), ("io_uring_disabled=2", g["disabled"])):
            if rows is None:
                continue
            total = len(rows)
            okn = sum(1 for r in rows if r["result"] == "ok")
            suite = f"{okn}/{total} test binaries pass" + ("" if g["done"] else ", guest did not finish")
            if variant:
                md.append(f"| {g['label']} [{variant}] | fallback (forced by the sysctl) | — | — | — | — | {suite} |")
                continue
            md.append(
                f"| {g['label']} | {rep.get('backend', '?')} | {rep.get('auto_file_to_socket', '?')} "
                f"| {rep.get('auto_socket_to_socket', '?')} | {rep.get('cachestat', '?')} "
                f"| {rep.get('iowq_exit_on_idle', '?')} | {suite} |"
            )
    md.append("")
    md.append("Every test binary runs both backends itself (`common::run_configs`): the suite "
              "column covers io_uring (Chain, Inline, Auto) and the fallback on each kernel.")
    md.append("")
    text = "\n".join(md)
    with open(os.path.join(matrix, "summary.md"), "w") as f:
        f.write(text)
    print()
    print(text)
    return 1 if bad else 0


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "artifacts":
        cmd_artifacts()
    elif cmd == "example":
        cmd_example(args[0])
    elif cmd == "moddeps":
        cmd_moddeps(args[0], args[1:])
    elif cmd == "cpio":
        cmd_cpio(args[0], args[1])
    elif cmd == "summarize":
        sys.exit(cmd_summarize(args[0], args[1:]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
