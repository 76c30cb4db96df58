// The todo web app: asks the user's own Basic node for access, lists and
// adds items, updates live when another device writes, and shows when its
// access was revoked. The API's address comes from `?api=` (default
// http://127.0.0.1:7878); the client is the TypeScript one, built
// (clients/typescript/dist/index.js) and served as basic-client.js.
import { Basic, BasicError, localStorageStore } from "./basic-client.js";

const api = new URLSearchParams(location.search).get("api") ?? "http://127.0.0.1:7878";
const basic = new Basic({ url: api, store: localStorageStore(`basic-todo-web-token ${api}`) });
const $ = (id) => document.getElementById(id);
const ITEMS = "SELECT id, title, done FROM todo.items ORDER BY done, title";
let live = null;

function show(state, status, hint = "") {
  document.body.dataset.state = state;
  $("status").textContent = status;
  $("hint").replaceChildren();
  if (hint instanceof Node) $("hint").append(hint);
  else $("hint").textContent = hint;
}

function message(error) {
  if (error instanceof BasicError && error.code === "network") {
    return `Your Basic node does not answer at ${api}: is \`basic up\` running?`;
  }
  return error instanceof Error ? error.message : String(error);
}

async function connect() {
  show("asking", "Asking your node for access…");
  try {
    await basic.requestAccess(
      { name: "Todo (web)", scopes: { todo: "read_write" } },
      {
        pollMs: 500,
        onPending: (pending) => {
          const hint = document.createElement("span");
          const code = document.createElement("code");
          code.id = "approve-command";
          code.textContent = `basic app approve ${pending.id}`;
          hint.append("To let this page use your todo list, run on your computer: ", code);
          show("pending", `Waiting for your approval (request ${pending.id})`, hint);
        },
      },
    );
    start();
  } catch (error) {
    if (error instanceof BasicError && error.code === "denied") {
      show("error", "You denied access.", "Connect again to ask anew.");
    } else {
      show("error", "Could not get access.", message(error));
    }
  }
}

function start() {
  show("connected", "Connected to your node", `Items update live from all your devices (${api}).`);
  live = basic.live(ITEMS, [], render);
  live.done.catch(failed);
}

async function failed(error) {
  if (error instanceof BasicError && error.revoked) {
    live?.close();
    live = null;
    await basic.forget();
    render([]);
    show("revoked", "Access revoked", "You revoked this page's access: it can no longer read or write your todo list. Connect to ask again.");
  } else {
    show("error", "Something went wrong.", message(error));
  }
}

function render(items) {
  const list = $("items");
  list.replaceChildren(
    ...items.map((item) => {
      const li = document.createElement("li");
      li.className = item.done ? "done" : "";
      li.dataset.id = item.id;
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = item.done;
      box.setAttribute("aria-label", `done: ${item.title}`);
      box.addEventListener("change", () =>
        basic.execute("UPDATE todo.items SET done = ? WHERE id = ?", [box.checked, item.id]).catch(failed),
      );
      const title = document.createElement("span");
      title.textContent = item.title;
      li.append(box, title);
      return li;
    }),
  );
  $("empty").hidden = items.length > 0;
}

async function add(title) {
  const inbox = await basic.query("SELECT id FROM todo.lists WHERE id = 'inbox'");
  if (inbox.length === 0) {
    await basic.execute("INSERT INTO todo.lists (id, name) VALUES ('inbox', 'Inbox')");
  }
  await basic.execute("INSERT INTO todo.items (id, list, title) VALUES (?, 'inbox', ?)", [
    crypto.randomUUID(),
    title,
  ]);
}

$("connect").addEventListener("click", connect);
$("add").addEventListener("submit", (event) => {
  event.preventDefault();
  const title = $("title").value.trim();
  if (title === "") return;
  $("title").value = "";
  add(title).catch(failed);
});

if (await basic.hasToken()) start();
else show("disconnected", "Not connected", "This page asks your own Basic node for access to your todo list.");
