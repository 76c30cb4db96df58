// A real `basic up` for the tests: a temporary data directory with the todo
// schema, the API on a free loopback port. BASIC_BIN names the binary
// (default: the workspace's target/debug/basic).
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
const bin = process.env.BASIC_BIN ?? join(root, "target/debug/basic");

/** Runs `basic --data DIR ARGS…`; returns its stdout, throws on failure. */
export function basic(data, ...args) {
  const run = spawnSync(bin, ["--data", data, ...args], { encoding: "utf8", timeout: 60_000 });
  if (run.status !== 0) throw new Error(`basic ${args.join(" ")}: ${run.stdout}${run.stderr}`);
  return run.stdout;
}

/** Starts a node; `stop()` ends it and removes its directory. */
export async function startNode() {
  const data = mkdtempSync(join(tmpdir(), "basic-ts-"));
  basic(data, "init");
  basic(data, "schema", "apply", join(root, "examples/todo.toml"));
  const child = spawn(bin, ["--data", data, "up", "--api", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"], {
    stdio: ["ignore", "ignore", "ignore"],
  });
  const deadline = Date.now() + 30_000;
  let address;
  while (!address) {
    if (Date.now() > deadline) throw new Error("basic up wrote no api.json");
    try {
      address = JSON.parse(readFileSync(join(data, "api.json"), "utf8")).address;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const owner = readFileSync(join(data, "owner-token"), "utf8").trim();
  return {
    data,
    url: `http://${address}`,
    owner,
    basic: (...args) => basic(data, ...args),
    async stop() {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
      rmSync(data, { recursive: true, force: true });
    },
  };
}
