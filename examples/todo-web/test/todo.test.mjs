// The todo web app in a real headless Chromium (Debian's, driven by
// playwright-core) against two real nodes, the page served from another
// origin than the API: ask for access → approve with the CLI → add an item
// → an item written on the other device appears live → revoke → the page
// shows the revoked state; on the way, an attacker's page in the same
// browser tries the stolen token and the owner token from its own origin,
// and a rebound DNS name. Screenshots go to target/todo-web/ (CHROMIUM
// names the browser, default /usr/bin/chromium; BASIC_BIN the node).
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

import { serve } from "../serve.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const bin = process.env.BASIC_BIN ?? join(root, "target/debug/basic");
const shots = join(root, "target/todo-web");
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const cleanup = [];

/** `basic --data DIR ARGS…`; its stdout. */
function basic(data, ...args) {
  const run = spawnSync(bin, ["--data", data, ...args], { encoding: "utf8", timeout: 60_000 });
  if (run.status !== 0) throw new Error(`basic ${args.join(" ")}: ${run.stdout}${run.stderr}`);
  return run.stdout;
}

/** Waits until `check` returns something truthy. */
async function until(what, check, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts `basic up` on `data`, dialling `peers`; resolves to its api.json. */
async function up(data, peers = []) {
  const args = ["--data", data, "up", "--api", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"];
  for (const peer of peers) args.push("--peer", peer);
  const child = spawn(bin, args, { stdio: ["ignore", "ignore", "ignore"] });
  cleanup.push(async () => {
    child.kill("SIGTERM");
    await new Promise((r) => (child.exitCode !== null ? r() : child.once("exit", r)));
  });
  const info = await until("api.json", () => {
    try {
      const info = JSON.parse(readFileSync(join(data, "api.json"), "utf8"));
      return info.address && info.listen?.length ? info : null;
    } catch {
      return null;
    }
  });
  return { ...info, url: `http://${info.address}`, owner: readFileSync(join(data, "owner-token"), "utf8").trim() };
}

function tempDir(name) {
  const dir = mkdtempSync(join(tmpdir(), `basic-web-${name}-`));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

let a, b, aData, bData, site, context, page;

before(async () => {
  mkdirSync(shots, { recursive: true });
  // Device A with the todo schema; device B joins it with an invite.
  aData = tempDir("a");
  basic(aData, "init");
  a = await up(aData);
  basic(aData, "schema", "apply", join(root, "examples/todo.toml"));
  const invite = await fetch(`${a.url}/v0/devices/invite`, {
    method: "POST",
    headers: { authorization: `Bearer ${a.owner}`, "content-type": "application/json" },
    body: JSON.stringify({ valid_minutes: 5 }),
  }).then((r) => r.json());
  bData = tempDir("b");
  basic(bData, "init", "--join", invite.invite);
  b = await up(bData, [a.listen[0]]);
  await until("the schema reaches B", async () => {
    const r = await fetch(`${b.url}/v0/sql`, {
      method: "POST",
      headers: { authorization: `Bearer ${b.owner}`, "content-type": "application/json" },
      body: JSON.stringify({ sql: "SELECT count(*) FROM todo.lists" }),
    });
    return r.ok;
  });
  // The page: another origin (another port) than the API.
  site = await serve(0);
  cleanup.push(() => new Promise((r) => site.close(r)));
  const profile = tempDir("chromium");
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: FLAGS,
    viewport: { width: 800, height: 640 },
  });
  cleanup.push(() => context.close());
  page = await context.newPage();
});

after(async () => {
  for (const step of cleanup.reverse()) {
    try {
      await step();
    } catch {
      // Go on: the rest must stop too.
    }
  }
});

test("ask, approve, add, see the other device's write live, revoke", async () => {
  const pageUrl = `http://127.0.0.1:${site.address().port}/?api=${encodeURIComponent(a.url)}`;
  assert.notEqual(new URL(pageUrl).origin, new URL(a.url).origin);
  await page.goto(pageUrl);
  await page.getByText("Not connected").waitFor();
  await page.screenshot({ path: join(shots, "1-not-connected.png") });

  await page.getByRole("button", { name: "Connect to my node" }).click();
  const command = await page.locator("#approve-command").textContent({ timeout: 15_000 });
  const id = command.replace("basic app approve ", "");
  await page.screenshot({ path: join(shots, "2-pending.png") });
  // The user sees which page asks.
  const requests = basic(aData, "app", "requests");
  assert.match(requests, new RegExp(`from the web page http://127\\.0\\.0\\.1:${site.address().port}`));
  basic(aData, "app", "approve", id);
  await page.getByText("Connected to your node").waitFor({ timeout: 15_000 });

  await page.locator("#title").fill("Buy milk");
  await page.getByRole("button", { name: "Add" }).click();
  await page.locator("#items li", { hasText: "Buy milk" }).waitFor({ timeout: 15_000 });
  await page.screenshot({ path: join(shots, "3-added.png") });

  // Device B writes; A receives the commit; the page's live query shows it.
  basic(bData, "sql", "INSERT INTO todo.lists (id, name) VALUES ('phone', 'Phone')");
  basic(bData, "sql", "INSERT INTO todo.items (id, list, title) VALUES ('from-b', 'phone', 'Call the plumber')");
  await page.locator("#items li", { hasText: "Call the plumber" }).waitFor({ timeout: 30_000 });
  await page.screenshot({ path: join(shots, "4-live-from-other-device.png") });

  // The token works from this page only: another origin (this page's
  // origin with another port) cannot use it, even knowing it.
  const token = await page.evaluate(() => Object.entries(localStorage).find(([k]) => k.startsWith("basic-todo-web-token"))[1]);
  const stolen = await fetch(`${a.url}/v0/sql`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, origin: "http://127.0.0.1:1", "content-type": "application/json" },
    body: JSON.stringify({ sql: "SELECT title FROM todo.items" }),
  });
  assert.equal(stolen.status, 403);

  // An attacker's page in the same browser, from another origin, holding
  // the stolen token and the owner token: the browser gets no CORS answer,
  // so it neither sends the request nor lets the page read anything.
  const evil = await serve(0);
  cleanup.push(() => new Promise((r) => evil.close(r)));
  const attacker = await context.newPage();
  await attacker.goto(`http://127.0.0.1:${evil.address().port}/`);
  const attempts = await attacker.evaluate(
    async ({ api, tokens }) => {
      const out = [];
      for (const token of tokens) {
        try {
          const r = await fetch(`${api}/v0/sql`, {
            method: "POST",
            headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
            body: JSON.stringify({ sql: "SELECT title FROM todo.items" }),
          });
          out.push(`read ${r.status}`);
        } catch {
          out.push("blocked");
        }
      }
      return out;
    },
    { api: a.url, tokens: [token, a.owner] },
  );
  assert.deepEqual(attempts, ["blocked", "blocked"]);
  // DNS rebinding: a page whose name resolves to the node's address (any
  // *.localhost name does, in Chromium) talks to the node as its own
  // origin, but with its name in Host: the node answers nothing.
  const rebound = await attacker.goto(`http://rebind.localhost:${new URL(a.url).port}/v0/health`);
  assert.equal(rebound.status(), 421);
  await attacker.close();

  const app = basic(aData, "app", "list").match(/app_[a-z2-7]+/)[0];
  basic(aData, "app", "revoke", app);
  await page.getByText("Access revoked").waitFor({ timeout: 15_000 });
  assert.equal(await page.locator("#items li").count(), 0);
  await page.screenshot({ path: join(shots, "5-revoked.png") });
});
