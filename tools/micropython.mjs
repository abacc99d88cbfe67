#!/usr/bin/env node
// Run a Python script of binsort's portable core under real MicroPython (the WebAssembly port,
// installed by tools/setup-system into ./.micropython).
//
//     node tools/micropython.mjs SCRIPT.py [ARGS...]
//
// The portable modules (edge/portable/manifest.txt) are copied into MicroPython's in-memory file system
// under /lib, and every ARG that names an existing file is copied to the same absolute path
// there (MicroPython starts in the same working directory), so the script reads its model and
// images under the names it was given, and files it writes under names given as ARGs (in
// folders that exist) are copied back. The script's stdout and stderr
// come through; its exit status is the SystemExit code (1 for an uncaught exception).
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const PACKAGE = join(ROOT, ".micropython/node_modules/@micropython/micropython-webassembly-pyscript/micropython.mjs");
// the files that run under MicroPython: the manifest kept beside the portable modules
const PORTABLE = readFileSync(join(ROOT, "edge/portable/manifest.txt"), "utf8")
  .split("\n")
  .map((line) => line.trim())
  .filter((line) => line && !line.startsWith("#"));

if (!existsSync(PACKAGE)) {
  process.stderr.write("micropython: the MicroPython package is missing; run tools/setup-system\n");
  process.exit(2);
}
const [script, ...args] = process.argv.slice(2);
if (!script) {
  process.stderr.write("usage: node tools/micropython.mjs SCRIPT.py [ARGS...]\n");
  process.exit(2);
}
const { loadMicroPython } = await import(pathToFileURL(PACKAGE));
let out = "";
const mp = await loadMicroPython({
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
  linebuffer: true,
});
const mkdirs = (dir) => {
  let at = "";
  for (const part of dir.split("/").filter(Boolean)) {
    at += "/" + part;
    try { mp.FS.mkdir(at); } catch { /* exists */ }
  }
};
mkdirs("/lib/protocol");
for (const rel of PORTABLE) mkdirs("/lib/" + dirname(rel));
for (const rel of PORTABLE) mp.FS.writeFile("/lib/" + rel, readFileSync(join(ROOT, rel)));
mkdirs(process.cwd());
for (const a of args) {
  if (existsSync(a) && statSync(a).isFile()) {
    mkdirs(dirname(resolve(a)));
    mp.FS.writeFile(resolve(a), readFileSync(a));
  }
}
// ARGs that name no file yet but whose folder exists are outputs: copied back afterwards
const outputs = args.filter((a) => !existsSync(a) && a.includes(".") && existsSync(dirname(resolve(a))));
for (const a of outputs) mkdirs(dirname(resolve(a)));
const argv = args;
mp.FS.writeFile("/main.py", readFileSync(resolve(script)));
const boot = [
  "import os, sys",
  "sys.path.insert(0, '/lib')",
  "os.chdir(" + JSON.stringify(process.cwd()) + ")",
  "sys.argv.clear()",
  "sys.argv.extend(" + JSON.stringify(["/main.py", ...argv]) + ")",
  "__name__ = '__main__'",
  "exec(open('/main.py').read())",
].join("\n");
function run(code) {
  try {
    mp.runPython(code);
    return 0;
  } catch (e) {
    const text = String(e.message || e);
    const exit = text.match(/SystemExit: (\d+)\s*$/);
    if (exit) return Number(exit[1]);
    if (/SystemExit\s*$/.test(text)) return 0;
    process.stderr.write(text + "\n");
    return 1;
  }
}
const status = run(boot);
// A script that wrote /heap_steps asks to be stepped for a heap measurement: garbage is only
// reclaimed between calls from JavaScript in this port, so each step is its own call.
const exists = (path) => { try { mp.FS.stat(path); return true; } catch { return false; } };
if (status === 0 && exists("/heap_steps")) {
  run("_heap_sample()");
  while (!exists("/heap_done")) {
    if (run("_heap_step()") !== 0) process.exit(1);
    run("_heap_sample()");
  }
  run("_heap_report()");
}
for (const a of outputs) {
  if (exists(resolve(a))) writeFileSync(resolve(a), mp.FS.readFile(resolve(a)));
}
process.exit(status);
