// What Renovate would find in a project, by Renovate's own code: its managers'
// file patterns and extractors, and the regex custom managers of renovate.json.
// Usage: node renovate_extract.mjs <renovate package dir> <project dir>
// Prints a JSON list of {manager, file, deps}; each dep with `rules`, the groupName and enabled
// that renovate.json's packageRules give it (Renovate's applyPackageRules). Runs offline:
// extraction and rules only, no lookups.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";

// Renovate wants Node.js 24; its extractors run on Node.js 20 given what 22 and 24 added.
const setMethods = {
  union(other) { return new Set([...this, ...other]); },
  intersection(other) { return new Set([...this].filter((x) => other.has(x))); },
  difference(other) { return new Set([...this].filter((x) => !other.has(x))); },
  isSubsetOf(other) { return [...this].every((x) => other.has(x)); },
};
for (const [name, method] of Object.entries(setMethods)) {
  if (!Set.prototype[name]) Object.defineProperty(Set.prototype, name, { value: method, writable: true, configurable: true });
}
if (!RegExp.escape) RegExp.escape = (text) => text.replace(/[\\^$.*+?()[\]{}|\/-]/g, "\\$&");

const [renovate, project] = process.argv.slice(2);
const load = (path) => import(join(renovate, "dist", path));
const { matchRegexOrGlobList } = await load("util/string-match.js");
const regex = await load("modules/manager/custom/regex/index.js");
const { applyPackageRules } = await load("util/package-rules/index.js");
const { GlobalConfig } = await load("config/global.js");
GlobalConfig.set({ localDir: project }); // where extractors read sibling files (lock files)

function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (name === ".git" || name === ".venv-check") return [];
    return statSync(path).isDirectory() ? files(path) : [relative(project, path)];
  });
}

const config = JSON.parse(readFileSync(join(project, "renovate.json"), "utf8"));
const found = [];
for (const manager of ["dockerfile", "pip_requirements", "github-actions", "kustomize", "kubernetes"]) {
  if (config[manager]?.enabled === false) continue;
  const module = await load(`modules/manager/${manager}/index.js`);
  const patterns = config[manager]?.managerFilePatterns ?? module.defaultConfig.managerFilePatterns;
  for (const file of files(project)) {
    if (!matchRegexOrGlobList(file, patterns)) continue;
    const result = await module.extractPackageFile(readFileSync(join(project, file), "utf8"), file, {});
    found.push({ manager, file, deps: result?.deps ?? [] });
  }
}
for (const [index, custom] of (config.customManagers ?? []).entries()) {
  for (const file of files(project)) {
    if (!matchRegexOrGlobList(file, custom.managerFilePatterns)) continue;
    const result = await regex.extractPackageFile(readFileSync(join(project, file), "utf8"), file, custom);
    found.push({ manager: `customManagers[${index}]`, file, deps: result?.deps ?? [] });
  }
}
for (const entry of found) {
  for (const dep of entry.deps) {
    const manager = entry.manager.startsWith("customManagers") ? "regex" : entry.manager;
    const applied = await applyPackageRules({
      packageRules: config.packageRules ?? [], ...dep, manager, packageFile: entry.file, packageName: dep.packageName ?? dep.depName,
    });
    dep.rules = { groupName: applied.groupName ?? null, enabled: applied.enabled !== false };
  }
}
process.stdout.write(JSON.stringify(found));
