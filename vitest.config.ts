import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";
import { driversSetting, floorSpecifiers } from "./test/drivers.ts";

const src = (name: string, entry = "index") =>
	fileURLToPath(new URL(`./packages/${name}/src/${entry}.ts`, import.meta.url));

// MIDDY_CONN_DRIVERS=floor runs the tests against the lowest mysql2, undici and @middy/core the packages declare
// (see test/drivers.ts): the exact specifiers `mysql2`, `mysql2/promise`, `undici` and `@middy/core` go to the root
// devDependencies mysql2-floor, undici-floor and @middy/core-floor (test/drivers.ts's floorSpecifiers), in test
// files and in the packages' sources alike (both are in vitest's module graph), and, through a Node resolve hook
// given to the forks, in the worker threads that tests start.
const floorDrivers = driversSetting() === "floor";
const driverAliases = floorDrivers
	? [
			{ find: /^mysql2$/, replacement: floorSpecifiers.mysql2 },
			{ find: /^mysql2\/promise$/, replacement: floorSpecifiers["mysql2/promise"] },
			{ find: /^undici$/, replacement: floorSpecifiers.undici },
			{ find: /^@middy\/core$/, replacement: floorSpecifiers["@middy/core"] },
		]
	: [];

// One config for the packages and the examples. Tests import the workspace packages from source, so a test run
// never depends on a stale build; the packed-install test is the one that exercises the published dist.
export default defineConfig({
	resolve: {
		// Exact names: `@middy-conn/lifecycle/internal` must not be read as `@middy-conn/lifecycle` + "/internal".
		alias: [
			{ find: /^@middy-conn\/lifecycle$/, replacement: src("lifecycle") },
			{ find: /^@middy-conn\/lifecycle\/internal$/, replacement: src("lifecycle", "internal") },
			{ find: /^@middy-conn\/http-pool$/, replacement: src("http-pool") },
			{ find: /^@middy-conn\/mysql$/, replacement: src("mysql") },
			{ find: /^@middy-conn\/test-harness$/, replacement: src("test-harness") },
			{
				find: /^@middy-conn\/test-harness\/test-fixtures$/,
				replacement: src("test-harness", "test-fixtures"),
			},
			...driverAliases,
		],
	},
	test: {
		include: ["packages/*/test/**/*.test.ts", "examples/*/test/**/*.test.ts", "test/**/*.test.ts"],
		// One throwaway MySQL server for the whole run, not one per file.
		globalSetup: ["./packages/test-harness/src/vitest-global-setup.ts"],
		pool: "forks",
		...(floorDrivers
			? { execArgv: ["--import", fileURLToPath(new URL("./test/drivers-floor-hook.ts", import.meta.url))] }
			: {}),
		testTimeout: 30_000,
		hookTimeout: 60_000,
		// After-hooks run in the reverse order of their registration (vitest's default, relied on by the harness's
		// test-fixtures.ts: pools registered last are closed before the database settles and the servers close).
		sequence: { hooks: "stack" },
		// Two cores: files run two at a time; each test file owns its own HTTP servers and database schema.
		maxWorkers: 2,
	},
});
