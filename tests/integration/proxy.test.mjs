// Behind a reverse proxy at a sub-path: --root-path shapes every URL the host generates,
// whether or not the proxy strips the prefix before passing the request on.
import { rmSync } from "node:fs";
import { assert, assertEq, copyExampleApps, startHost, suite, tempDir } from "../lib/host.mjs";

const s = suite("proxy");

s.test("pages carry the root path", async ({ host }) => {
  for (const path of ["/demos/", "/"]) {
    const html = await (await fetch(host.url + path)).text();
    assert(html.includes('data-root="/demos"') || html.includes("/demos/static/"), `${path}: root filled in`);
    assert(!html.includes("{{root}}"), "no template left");
  }
  const r = await fetch(host.url + "/demos/static/style.css");
  assertEq(r.status, 200);
});

s.test("the Gradio root and API URLs include the root path", async ({ host }) => {
  const headers = { "x-forwarded-proto": "https", "x-forwarded-host": "lab.example.org" };
  for (const prefix of ["/demos", ""]) { // a proxy that keeps the prefix, and one that strips it
    const cfg = await (await fetch(host.url + prefix + "/spaces/moonspace/hello/config", { headers })).json();
    assertEq(cfg.root, "https://lab.example.org/demos/spaces/moonspace/hello");
    const a = await (await fetch(host.url + prefix + "/api/spaces/moonspace/hello", { headers })).json();
    assertEq(a.api_url, "https://lab.example.org/demos/spaces/moonspace/hello/");
  }
});

s.test("calls work through the prefix", async ({ host }) => {
  const r = await fetch(host.url + "/demos/spaces/moonspace/hello/gradio_api/run/predict", {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ data: ["Proxy", 1] }),
  });
  assertEq((await r.json()).data, ["Hello, Proxy!"]);
});

s.test("hostile forwarding headers are not echoed", async ({ host }) => {
  const cfg = await (await fetch(host.url + "/demos/spaces/moonspace/hello/config", {
    headers: { "x-forwarded-host": 'evil.test"><script>', "x-forwarded-proto": "javascript" },
  })).json();
  assert(!cfg.root.includes("<") && !cfg.root.includes('"') && cfg.root.startsWith("http://"), cfg.root);
});

await s.run(async () => {
  const apps = tempDir("ms-apps-");
  copyExampleApps(apps);
  return { host: await startHost({ apps: [apps], args: ["--root-path", "/demos/"] }), apps };
}, async ({ host, apps }) => {
  await host.stop();
  rmSync(apps, { recursive: true, force: true });
});
