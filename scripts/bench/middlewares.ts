// The middlewares under test, loaded from their TypeScript sources so that `pnpm bench` needs no build step.
//
// Node strips types from .ts files but refuses to do so under node_modules, and the workspace packages resolve
// each other by name through node_modules to their (unbuilt, or stale) dist. A resolve hook maps every
// `@middy-conn/*` specifier, subpaths included (`@middy-conn/lifecycle/internal`), to its source with the harness's
// own mapping (workspace-sources.ts, the one tsconfig `paths`, vitest's aliases and the harness's bundles and
// workers follow): one copy of each module, so that `instanceof MiddyConnError` holds across the packages. The code
// that runs is the same JavaScript a build would emit (type stripping only removes types).
//
// The packages are written in parallel with this benchmark: a missing or broken one is reported and its
// contenders are skipped, instead of failing the whole run.
//
// MIDDY_CONN_BENCH_SOURCES=<dir> takes a package's source file from <dir>/packages/<name>/src/ when that exists, to
// measure a proposed change against the same run's baselines without touching the working tree (a patched copy
// outside the repo still resolves undici, mysql2 and @middy/* from the repo's node_modules when placed under it,
// e.g. in .tmp/).
import { existsSync } from "node:fs";
import { registerHooks } from "node:module";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
// The mapping alone, not the harness's index: the benchmark's measured processes load this file, and must not
// carry the harness (mysql2, the certificate generator) in their memory.
import { workspaceSourceUrl } from "@middy-conn/test-harness/workspace-sources";

const root = new URL("../../", import.meta.url);
const override = process.env.MIDDY_CONN_BENCH_SOURCES
	? pathToFileURL(`${resolve(process.env.MIDDY_CONN_BENCH_SOURCES)}/`)
	: undefined;

/** The source file behind a workspace specifier: the override's copy when it has one, else the repository's. */
const sourceOf = (specifier: string): URL | undefined => {
	const source = workspaceSourceUrl(specifier);
	if (!source || !override) return source;
	const patched = new URL(source.href.slice(root.href.length), override);
	return existsSync(patched) ? patched : source;
};

registerHooks({
	resolve(specifier, context, nextResolve) {
		const source = sourceOf(specifier);
		if (source && existsSync(source)) return { url: source.href, shortCircuit: true };
		return nextResolve(specifier, context);
	},
});

export type HttpPoolModule = typeof import("@middy-conn/http-pool");
export type MysqlModule = typeof import("@middy-conn/mysql");

export interface Loaded<T> {
	module: T | undefined;
	/** Why the module is missing, for the report. */
	problem: string | undefined;
}

const load = async <T>(name: string): Promise<Loaded<T>> => {
	const source = sourceOf(`@middy-conn/${name}`);
	if (!source || !existsSync(source))
		return { module: undefined, problem: `packages/${name}/src/index.ts does not exist yet` };
	if (override && source.href.startsWith(override.href)) {
		process.stderr.write(`[bench] ${name} from ${source.pathname}\n`);
	}
	try {
		return { module: (await import(source.href)) as T, problem: undefined };
	} catch (error) {
		return { module: undefined, problem: `packages/${name} failed to load: ${String(error)}` };
	}
};

export const loadHttpPool = () => load<HttpPoolModule>("http-pool");
export const loadMysql = () => load<MysqlModule>("mysql");
