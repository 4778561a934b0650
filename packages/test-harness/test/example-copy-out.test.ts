// The examples are meant to be copied out: a user copies an example's folder into a project of their own, points
// its `@middy-conn/*` dependencies at the published packages (here: the packed tarballs, as npm would publish
// them), runs `npm install` and the documented `npm run build`, and gets a bundle that Lambda can load. Nothing
// here may reach back into this repository (its scripts, its workspace, its harness).
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
	type PublishedPackage,
	packPublishedPackages,
	repositoryRoot,
	runCommand,
} from "../src/packed-packages.ts";

const examples = ["orders-api", "read-after-write", "webhook-relay"] as const;
const work = mkdtempSync(join(tmpdir(), "middy-conn-copy-out-"));
let tarballs: Record<PublishedPackage, string>;

/** What each example's module needs in its environment to load (it reads its settings at cold start). */
const environment = {
	...process.env,
	DB_HOST: "127.0.0.1",
	DB_USER: "app",
	DB_PASSWORD: "not-a-secret",
	DB_NAME: "app",
	PARTNER_ORIGIN: "https://partner.example.com",
	WEBHOOK_ORIGIN: "https://hooks.example.com",
};

beforeAll(() => {
	const destination = join(work, "tarballs");
	mkdirSync(destination);
	tarballs = packPublishedPackages(destination);
}, 300_000);

afterAll(() => {
	rmSync(work, { recursive: true, force: true });
});

describe("an example copied out of the repository", () => {
	it.each(examples)(
		"%s: installs with plain npm, builds with its documented `npm run build`, and its bundle loads",
		(name) => {
			const copy = join(work, name);
			cpSync(join(repositoryRoot, "examples", name), copy, {
				recursive: true,
				filter: (source) => !/[/\\](node_modules|dist|test)$/.test(source),
			});
			// As the example's README says: `workspace:^` becomes the published version (here, its tarball). The
			// lifecycle package is not on npm yet either: it is pinned to its tarball too.
			const manifest = JSON.parse(readFileSync(join(copy, "package.json"), "utf8"));
			for (const [dependency, range] of Object.entries(manifest.dependencies as Record<string, string>)) {
				if (range.startsWith("workspace:")) {
					const packageName = dependency.replace("@middy-conn/", "") as PublishedPackage;
					manifest.dependencies[dependency] = `file:${tarballs[packageName]}`;
				}
			}
			manifest.overrides = { "@middy-conn/lifecycle": `file:${tarballs.lifecycle}` };
			writeFileSync(join(copy, "package.json"), JSON.stringify(manifest, null, 2));
			expect(JSON.stringify(manifest)).not.toContain("workspace:");
			expect(manifest.scripts.build).not.toMatch(/\.\.\//);

			runCommand("npm", ["install", "--no-audit", "--no-fund", "--loglevel=error"], copy, {
				timeoutMs: 240_000,
			});
			runCommand("npm", ["run", "build"], copy);

			expect(existsSync(join(copy, "dist", "handler.mjs"))).toBe(true);
			expect(existsSync(join(copy, "dist", "handler.mjs.map"))).toBe(true);
			const loaded = runCommand(
				process.execPath,
				[
					"--input-type=module",
					"-e",
					"const m = await import('./dist/handler.mjs'); console.log(JSON.stringify(Object.keys(m).filter((k) => typeof m[k] === 'function')));",
				],
				copy,
				{ env: environment },
			);
			expect(JSON.parse(loaded.trim().split("\n").pop() ?? "[]").length).toBeGreaterThan(0);
		},
		300_000,
	);
});
