// The examples are meant to be copied out: a user copies an example's folder into a project of their own, points
// its `@middy-conn/*` dependencies at the published packages (here: the packed tarballs, as npm would publish
// them), runs `npm install` and the documented `npm run build`, and gets a bundle that Lambda can load, with a
// source map that makes its stack traces readable. Nothing here may reach back into this repository (its scripts,
// its workspace, its harness).
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

/**
 * For each example, a setting that one of the packages rejects at cold start (a TypeError thrown in the package's
 * own options.ts): its stack shows whether the package's frames map back to its sources through the bundle's map.
 */
const rejectedSetting: Record<(typeof examples)[number], Record<string, string>> = {
	"orders-api": { WEBHOOK_ORIGIN: "ftp://hooks.example.com" },
	"read-after-write": { DB_HOST: "db.example.com:3306" },
	"webhook-relay": { PARTNER_ORIGIN: "ftp://partner.example.com" },
};

/** The stack of the error that importing the bundle throws at cold start, with or without source maps. */
const coldStartStack = (copy: string, env: Record<string, string>, sourceMaps: boolean): string => {
	const output = runCommand(
		process.execPath,
		[
			...(sourceMaps ? ["--enable-source-maps"] : []),
			"--input-type=module",
			"-e",
			"try { await import('./dist/handler.mjs'); console.log(JSON.stringify(null)); } catch (error) { console.log(JSON.stringify(String(error.stack))); }",
		],
		copy,
		// Only what Node needs: the example reads its settings from the environment and fails without them.
		{ env: { PATH: process.env.PATH ?? "", ...env } },
	);
	const stack = JSON.parse(output.trim().split("\n").pop() ?? "null") as string | null;
	if (stack === null) throw new Error("the bundle loaded: no error to read the stack of");
	return stack;
};
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
		"%s: installs with plain npm, builds with its documented `npm run build`, and its bundle loads, with stack traces that name its TypeScript sources",
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

			// Readable stack traces, as the template deploys the bundle (its map beside it, --enable-source-maps): a
			// missing setting fails in handler.ts, a rejected one in the package's own source (the packages ship
			// their maps and sources, and esbuild follows them into the bundle's map). Without the flag, the same
			// stack names only the minified bundle.
			const missing = coldStartStack(copy, {}, true);
			expect(missing).toMatch(/is not set/);
			expect(missing).toMatch(/\bhandler\.ts:\d+:\d+/);
			expect(coldStartStack(copy, {}, false)).not.toMatch(/\.ts:\d+/);
			const rejected = coldStartStack(copy, { ...environment, ...rejectedSetting[name] }, true);
			expect(rejected).toMatch(/TypeError: Option '/);
			expect(rejected).toMatch(/@middy-conn\/(http-pool|mysql)\/src\/[\w-]+\.ts:\d+:\d+/);
		},
		300_000,
	);

	it.each(examples)(
		"%s: its template and its build agree: a source map next to the bundle, and Lambda told to use it",
		(name) => {
			const folder = join(repositoryRoot, "examples", name);
			const template = readFileSync(join(folder, "template.yaml"), "utf8");
			const build: string = JSON.parse(readFileSync(join(folder, "package.json"), "utf8")).scripts.build;
			const functions = template.match(/^\s+BuildMethod: esbuild$/gm)?.length ?? 0;
			expect(functions).toBeGreaterThan(0);
			// Every function's esbuild settings: a map, the Node 24 target of its runtime.
			expect(template.match(/^\s+Sourcemap: true$/gm)?.length).toBe(functions);
			expect(template.match(/^\s+Target: node24$/gm)?.length).toBe(functions);
			// Node reads the map only with --enable-source-maps (Globals, for every function).
			expect(template).toMatch(/^\s+NODE_OPTIONS: --enable-source-maps$/m);
			expect(template).toMatch(/^\s+Runtime: nodejs24\.x$/m);
			// `npm run build` bundles as `sam build` does.
			expect(build).toMatch(/^esbuild handler\.ts --bundle /);
			for (const flag of ["--sourcemap", "--target=node24", "--format=esm", "--platform=node", "--minify"]) {
				expect(build.split(" ")).toContain(flag);
			}
		},
	);
});
