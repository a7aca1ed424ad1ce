// Validate deploy/k8s/servicemonitor.yaml against the Prometheus Operator's ServiceMonitor schema, offline: the
// npm package @kubernetes-models/prometheus-operator ships the CRD's schema compiled into a validator.
//
//   npm install --prefix /tmp/po @kubernetes-models/prometheus-operator@6.0.0 js-yaml
//   NODE_PATH=/tmp/po/node_modules node scripts/validate_servicemonitor.mjs [FILE]
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const modules = path.resolve(process.env.NODE_PATH || "node_modules");
const require = createRequire(path.join(modules, "x.js"));
// The package exports ESM only, so the model file is imported by its path.
const model = path.join(modules, "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js");
const { ServiceMonitor } = await import(pathToFileURL(model).href);
const yaml = require("js-yaml");

const file = process.argv[2] || "deploy/k8s/servicemonitor.yaml";
const doc = yaml.load(readFileSync(file, "utf8"));
try {
  new ServiceMonitor(doc).validate();
  console.log(`${file}: valid ServiceMonitor (monitoring.coreos.com/v1)`);
} catch (err) {
  console.error(`${file}: ${err.message}`);
  process.exit(1);
}
