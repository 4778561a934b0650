// Cold start: a fresh Node process that imports a handler module the way the Lambda runtime does, timed from
// spawn until the module scope has run and the handler export is there (the part of a Lambda init that the code
// controls, plus Node's own boot). Bundles are made with the examples' bundler (test-harness bundle-handler.ts:
// the SAM templates' esbuild settings), so what is timed is what gets deployed. The variants are spawned
// interleaved, one after the other, so that none runs on a busier machine than another.
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { bundleHandler } from "@middy-conn/test-harness";
import { spawnTracked } from "../cleanup.ts";
import { type ComparisonResult, type Contender, runComparison } from "./runner.ts";
import { coldStartRounds, type Mode } from "./settings.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
const workDir = `${root}.tmp/bench/cold-start`;
const exampleHandler = `${root}examples/orders-api/handler.ts`;
const minimalHandler = fileURLToPath(new URL("./cold-start-handler.ts", import.meta.url));

export const NAMES = {
	node: "node, empty module",
	bareUnbundled: "import undici + mysql2 (node_modules)",
	bare: "import undici + mysql2 (bundled)",
	minimal: "middy + httpPool + mysqlConnection (bundled)",
	example: "examples/orders-api handler (bundled)",
} as const;

export interface ColdStartResult {
	comparison: ComparisonResult;
	/** Bundle sizes in bytes, by variant name. */
	sizes: Record<string, number>;
	/** Variants left out, with the reason. */
	problems: string[];
}

/** The example reads its configuration at module scope; any value will do, nothing connects during init. */
const EXAMPLE_ENV = {
	WEBHOOK_ORIGIN: "https://127.0.0.1:9",
	DB_HOST: "127.0.0.1",
	DB_USER: "app",
	DB_PASSWORD: "secret",
	DB_NAME: "orders",
};

const BARE_SOURCE = `import { Pool } from "undici";
import mysql from "mysql2/promise";
// Referenced, so that neither import is tree-shaken away.
export const handler = async () => [Pool, mysql.createPool];
`;

/** What the runtime does: import the module, find the export; then tell the parent. */
const loader = (module: string) =>
	`const { handler } = await import(${JSON.stringify(module)});
if (typeof handler !== "function") throw new Error("no handler export");
process.stdout.write("ready\\n");
`;

interface Variant {
	name: string;
	/** The handler module's source file; undefined for the empty-module floor. */
	entry?: string;
	bundle: boolean;
}

/**
 * Bundles what needs bundling and writes one loader per variant. A variant that cannot be bundled (a middleware
 * not written yet) is left out and reported; the others still run.
 */
const prepare = async () => {
	mkdirSync(workDir, { recursive: true });
	const bareEntry = `${workDir}/bare-handler.mjs`;
	writeFileSync(bareEntry, BARE_SOURCE);
	const variants: Variant[] = [
		{ name: NAMES.node, bundle: false },
		{ name: NAMES.bareUnbundled, entry: bareEntry, bundle: false },
		{ name: NAMES.bare, entry: bareEntry, bundle: true },
		{ name: NAMES.minimal, entry: minimalHandler, bundle: true },
		...(existsSync(exampleHandler) ? [{ name: NAMES.example, entry: exampleHandler, bundle: true }] : []),
	];
	const loaders: Record<string, string> = {};
	const sizes: Record<string, number> = {};
	const problems: string[] = existsSync(exampleHandler)
		? []
		: [`${NAMES.example}: the file does not exist yet`];
	for (const [index, variant] of variants.entries()) {
		let module: string | undefined = variant.entry;
		if (variant.entry && variant.bundle) {
			const outfile = `${workDir}/bundle-${index}.mjs`;
			try {
				const bundle = await bundleHandler({ entry: variant.entry, outfile });
				sizes[variant.name] = bundle.bytes;
				module = outfile;
			} catch (error) {
				problems.push(
					`${variant.name}: bundling failed: ${error instanceof Error ? error.message.split("\n")[0] : String(error)}`,
				);
				continue;
			}
		}
		const file = `${workDir}/load-${index}.mjs`;
		writeFileSync(file, module ? loader(module) : 'process.stdout.write("ready\\n");\n');
		loaders[variant.name] = file;
	}
	return { loaders, sizes, problems };
};

/** Spawns `node file`, resolves when it prints its ready line, and kills it then (it has served its purpose). */
const spawnUntilReady = (file: string): Promise<void> =>
	new Promise((resolve, reject) => {
		const child = spawnTracked(process.execPath, [file], {
			stdio: ["ignore", "pipe", "pipe"],
			cwd: workDir,
			timeoutMs: 20_000,
			// Like Lambda: a clean environment (a --cpu-prof in NODE_OPTIONS must not profile every child).
			env: { PATH: process.env.PATH ?? "", NODE_ENV: "production", ...EXAMPLE_ENV },
		});
		let stderr = "";
		child.stderr?.on("data", (chunk: Buffer) => {
			stderr += chunk.toString();
		});
		child.stdout?.on("data", (chunk: Buffer) => {
			if (chunk.toString().includes("ready")) {
				resolve();
				child.kill("SIGKILL");
			}
		});
		child.once("exit", (code, signal) => {
			if (signal !== "SIGKILL")
				reject(new Error(`${file} exited (${code ?? signal}) before ready: ${stderr.trim()}`));
		});
		child.once("error", reject);
	});

export const runColdStartGroup = async (mode: Mode): Promise<ColdStartResult> => {
	const { loaders, sizes, problems } = await prepare();
	for (const problem of problems) mode.log(`  skipped ${problem}`);
	const contenders: Contender[] = Object.entries(loaders).map(([name, file]) => {
		const size = sizes[name];
		return {
			name,
			note: size === undefined ? "unbundled" : `${(size / 1024).toFixed(0)} KiB bundle`,
			invoke: () => spawnUntilReady(file),
		};
	});
	const rounds = coldStartRounds(mode);
	mode.log("Cold start");
	const comparison = await runComparison(
		{
			id: "cold-start",
			title: "Cold start: spawn until the handler module is loaded",
			description:
				"A new `node` process per sample that imports the handler module as the Lambda runtime does, timed from spawn until the `handler` export is there. Bundles: esbuild, ESM, minified, everything bundled (the examples' SAM settings). The reference is undici + mysql2 bundled bare.",
			reference: NAMES.bare,
			contenders,
			batch: 1,
			warmup: 1,
			minRounds: rounds,
			maxRounds: rounds,
			budgetMs: 0,
		},
		mode.log,
	);
	return { comparison, sizes, problems };
};
