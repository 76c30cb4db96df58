// The client against a real node: asking for access, SQL, typed queries,
// live queries, and the API's errors as typed objects.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Basic, BasicError, memoryStore } from "../dist/index.js";
import { startNode } from "./support/node.mjs";

let node;
let client;

before(async () => {
  node = await startNode();
  client = new Basic({ url: node.url, store: memoryStore() });
  let pending;
  const asked = client.requestAccess(
    { name: "Todo (test)", scopes: { todo: "read_write" } },
    { onPending: (p) => (pending = p), pollMs: 50 },
  );
  // The pending state is there to show before the user answers.
  while (!pending) await new Promise((r) => setTimeout(r, 20));
  assert.match(pending.id, /^[0-9a-f]{16}$/);
  assert.match(pending.app, /^app_/);
  assert.equal(await client.hasToken(), false);
  assert.match(node.basic("app", "requests"), new RegExp(pending.id));
  node.basic("app", "approve", pending.id);
  await asked;
  assert.equal(await client.hasToken(), true);
});

after(async () => {
  await node?.stop();
});

test("writes and typed queries", async () => {
  await client.execute("INSERT INTO todo.lists (id, name) VALUES ('home', 'Home')");
  const written = await client.execute(
    "INSERT INTO todo.items (id, list, title, done) VALUES (?, 'home', ?, ?)",
    ["a", "milk", false],
  );
  assert.equal(written.written, 1);
  assert.equal(written.commits.length, 1);
  /** @type {{ id: string, title: string, done: boolean }[]} */
  const items = await client.query("SELECT id, title, done FROM todo.items WHERE id = ?", ["a"]);
  assert.deepEqual(items, [{ id: "a", title: "milk", done: false }]);
  const raw = await client.sql("SELECT count(*) AS n FROM todo.items");
  assert.deepEqual(raw, { columns: ["n"], rows: [[1]] });
  await assert.rejects(client.query("DELETE FROM todo.items WHERE id = 'zzz'"), (e) => e.code === "bad_request");
});

test("errors carry the API's status and code", async () => {
  await assert.rejects(client.sql("SELECT nope FROM todo.items"), (e) => {
    assert.ok(e instanceof BasicError);
    return e.status === 400 && e.code === "bad_request" && /nope/.test(e.message);
  });
  const big = "x".repeat(3 << 20);
  await assert.rejects(client.sql("SELECT ?", [big]), (e) => {
    // 413, or the node closed the connection while the body was still
    // being sent (HTTP allows both).
    return e instanceof BasicError && ((e.status === 413 && e.code === "too_large") || e.code === "network");
  });
  const stranger = new Basic({ url: node.url, store: memoryStore("not-a-token") });
  await assert.rejects(stranger.sql("SELECT 1"), (e) => e.status === 401 && e.code === "unauthorized" && e.revoked);
  const nobody = new Basic({ url: node.url });
  await assert.rejects(nobody.sql("SELECT 1"), (e) => e.code === "unauthorized");
  const away = new Basic({ url: "http://127.0.0.1:9", store: memoryStore("x") });
  await assert.rejects(away.sql("SELECT 1"), (e) => e.status === 0 && e.code === "network");
  // Outside the grant: the app holds todo only.
  await assert.rejects(client.sql("SELECT * FROM contacts.people"), (e) => e.status >= 400);
});

test("a live query sees writes, then the revocation", async () => {
  const seen = [];
  let wake;
  const live = client.live("SELECT title FROM todo.items ORDER BY title", [], (rows) => {
    seen.push(rows.map((r) => r.title));
    wake?.();
  });
  const next = (count) =>
    new Promise((resolve, reject) => {
      const check = () => (seen.length >= count ? resolve() : (wake = check));
      check();
      setTimeout(() => reject(new Error(`live saw ${JSON.stringify(seen)}`)), 10_000);
    });
  await next(1);
  await client.execute("INSERT INTO todo.items (id, list, title, done) VALUES ('b', 'home', 'bread', false)");
  await next(2);
  assert.deepEqual(seen.at(-1), ["bread", "milk"]);

  const id = node.basic("app", "list").match(/app_[a-z2-7]+/)[0];
  node.basic("app", "revoke", id);
  await assert.rejects(live.done, (e) => e instanceof BasicError && e.code === "forbidden");
  await assert.rejects(client.sql("SELECT 1 FROM todo.items"), (e) => e.status === 403 && e.revoked);
  live.close();
});

test("a closed live query ends quietly", async () => {
  const fresh = new Basic({ url: node.url, store: memoryStore(node.owner) });
  let rows = 0;
  const live = fresh.live("SELECT 1 AS one", [], () => rows++);
  while (rows === 0) await new Promise((r) => setTimeout(r, 20));
  live.close();
  await live.done;
});

test("row types from `basic schema types` type-check with query<T>", async () => {
  const { mkdirSync, writeFileSync, rmSync } = await import("node:fs");
  const { execFileSync } = await import("node:child_process");
  const { fileURLToPath } = await import("node:url");
  const here = fileURLToPath(new URL(".", import.meta.url));
  const dir = `${here}.gen`;
  mkdirSync(dir, { recursive: true });
  try {
    writeFileSync(`${dir}/rows.ts`, node.basic("schema", "types", `${here}../../../examples/todo.toml`, "--lang", "ts"));
    writeFileSync(
      `${dir}/use.ts`,
      [
        'import { Basic } from "../../dist/index.js";',
        'import type { TodoItems } from "./rows.js";',
        "export async function titles(basic: Basic): Promise<string[]> {",
        '  const items = await basic.query<TodoItems>("SELECT * FROM todo.items");',
        "  const due: number | null = items[0]!.due;",
        "  void due;",
        "  return items.map((item) => item.title);",
        "}",
        "// @ts-expect-error: done is a boolean",
        "export const wrong: TodoItems['done'] = 1;",
      ].join("\n"),
    );
    const tsc = `${here}../node_modules/.bin/tsc`;
    execFileSync(tsc, ["--noEmit", "--strict", "--target", "es2022", "--module", "es2022", "--moduleResolution", "bundler", "--lib", "es2022,dom", `${dir}/use.ts`], { encoding: "utf8" });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
