// Serves the todo web app's static files, and the TypeScript client
// (clients/typescript/dist/index.js, built with `npm run build` there) as
// basic-client.js: `node serve.mjs [PORT]` (default 8080), then open
// http://127.0.0.1:PORT/?api=http://127.0.0.1:7878.
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const FILES = {
  "/": ["index.html", "text/html"],
  "/index.html": ["index.html", "text/html"],
  "/app.js": ["app.js", "text/javascript"],
  "/style.css": ["style.css", "text/css"],
  "/basic-client.js": ["../../clients/typescript/dist/index.js", "text/javascript"],
};

/** Starts the server on 127.0.0.1:`port` (0: any free one); resolves to it. */
export function serve(port = 8080) {
  const server = createServer(async (request, response) => {
    const path = new URL(request.url ?? "/", "http://localhost").pathname;
    const file = FILES[path];
    if (request.method !== "GET" || !file) {
      response.writeHead(404, { "content-type": "text/plain" }).end("not found");
      return;
    }
    try {
      const body = await readFile(join(here, file[0]));
      response.writeHead(200, { "content-type": `${file[1]}; charset=utf-8`, "cache-control": "no-store" }).end(body);
    } catch {
      response.writeHead(500, { "content-type": "text/plain" }).end(`cannot read ${file[0]}`);
    }
  });
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve(server)));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const server = await serve(Number(process.argv[2] ?? 8080));
  console.log(`todo-web on http://127.0.0.1:${server.address().port}/`);
}
