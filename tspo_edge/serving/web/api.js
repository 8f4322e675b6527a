// The API page (/docs): each endpoint of /openapi.json with its parameters and body, offline
// (no CDN, no inline script). Text goes in with textContent, never as HTML.
"use strict";

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function schemaText(spec, schema) {
  if (!schema) return "";
  if (schema.$ref) schema = spec.components.schemas[schema.$ref.split("/").pop()] || {};
  if (!schema.properties) return schema.type || "";
  const req = new Set(schema.required || []);
  return Object.entries(schema.properties).map(([k, v]) => {
    const type = v.type || (v.anyOf || []).map((a) => a.type).filter(Boolean).join(" | ");
    return `${k}${req.has(k) ? "" : "?"}: ${type}${v.description ? "  — " + v.description : ""}`;
  }).join("\n");
}

async function main() {
  const resp = await fetch("/openapi.json", { credentials: "same-origin" });
  if (!resp.ok) throw new Error(`/openapi.json: ${resp.status}`);
  const spec = await resp.json();
  const box = document.getElementById("endpoints");
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const sec = el("section");
      sec.append(el("h2", `${method.toUpperCase()} ${path}`));
      if (op.summary) sec.append(el("p", op.summary));
      const params = (op.parameters || []).map((p) =>
        `${p.name} (${p.in}${p.required ? ", required" : ""}): ${(p.schema && p.schema.type) || ""}`);
      if (params.length) sec.append(el("pre", params.join("\n")));
      const body = op.requestBody && op.requestBody.content["application/json"];
      if (body) sec.append(el("pre", "body (JSON):\n" + schemaText(spec, body.schema)));
      box.append(sec);
    }
  }
}

main().catch((e) => { document.getElementById("error").textContent = e.message; });
