// Which versions of the drivers (mysql2, undici) and of Middy (@middy/core) a test run uses. By default, the ones
// the lockfile resolves (the latest supported). With MIDDY_CONN_DRIVERS=floor, the lowest versions the packages
// declare: the root devDependencies `mysql2-floor` (npm:mysql2@<peer floor of @middy-conn/mysql>), `undici-floor`
// (npm:undici@<lowest version of @middy-conn/http-pool's dependency range>) and `@middy/core-floor`
// (npm:@middy/core@<peer floor of the packages>), which `mysql2`, `mysql2/promise`, `undici` and `@middy/core`
// then resolve to:
// - in vitest's module graph (test files and the packages' sources): vitest.config.ts's `resolve.alias`;
// - in worker threads started by a test (the harness's startWorkerThreadsEnvironment): drivers-floor-hook.ts, a
//   Node resolve hook that vitest passes to its forks with `--import`, and that worker threads inherit.
// Child processes of the harness (startExecutionEnvironment, startFunctionProcess) run on plain Node with the
// latest drivers whatever the setting: they are not given the parent's flags.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

export type Drivers = "latest" | "floor";

export const driversSetting = (value = process.env.MIDDY_CONN_DRIVERS): Drivers => {
	if (value === undefined || value === "" || value === "latest") return "latest";
	if (value === "floor") return "floor";
	throw new Error(`MIDDY_CONN_DRIVERS must be "floor" or "latest" (or unset), not ${JSON.stringify(value)}`);
};

/** The exact specifiers redirected under MIDDY_CONN_DRIVERS=floor, and where they go. */
export const floorSpecifiers = {
	mysql2: "mysql2-floor",
	"mysql2/promise": "mysql2-floor/promise",
	undici: "undici-floor",
	"@middy/core": "@middy/core-floor",
} as const;

/** Where `specifier` goes under MIDDY_CONN_DRIVERS=floor; undefined for any other specifier. */
export const floorSpecifier = (specifier: string): string | undefined =>
	Object.hasOwn(floorSpecifiers, specifier)
		? floorSpecifiers[specifier as keyof typeof floorSpecifiers]
		: undefined;

type Driver = "mysql2" | "undici";
type DriverModule = "mysql2" | "mysql2/promise" | "undici";

/** The lowest @middy/core the packages accept (their peer range's floor): what @middy/core-floor must be. */
export const middyCoreFloor = (): string => {
	const floors = ["lifecycle", "http-pool", "mysql"].map((name) => {
		const manifest = JSON.parse(
			readFileSync(new URL(`../packages/${name}/package.json`, import.meta.url), "utf8"),
		) as { peerDependencies: Record<string, string> };
		return rangeFloor(manifest.peerDependencies["@middy/core"] ?? "");
	});
	if (new Set(floors).size !== 1) throw new Error(`the packages disagree on @middy/core's floor: ${floors}`);
	return floors[0] as string;
};

const rootRequire = createRequire(new URL("../package.json", import.meta.url));
/** A function each driver module exports, to tell which installed copy a module object is. */
const probe: Record<DriverModule, string> = {
	mysql2: "createConnection",
	"mysql2/promise": "createConnection",
	undici: "Pool",
};

/** An installed copy of a driver module, loaded by path: under the floor hook, `require("mysql2")` is redirected. */
const copyOf = (specifier: DriverModule, drivers: Drivers) => {
	const [driver, subpath] = specifier.split("/") as [Driver, string | undefined];
	const name = drivers === "floor" ? floorSpecifiers[driver] : driver;
	const dir = fileURLToPath(new URL(`../node_modules/${name}/`, import.meta.url));
	return {
		exports: rootRequire(`${dir}${subpath ?? ""}`) as Record<string, unknown>,
		version: () => (JSON.parse(readFileSync(`${dir}package.json`, "utf8")) as { version: string }).version,
	};
};

/** The installed copy of a driver module that `drivers` selects (the root's devDependency or its floor alias). */
export const installedDriver = (specifier: DriverModule, drivers: Drivers = driversSetting()) =>
	copyOf(specifier, drivers).exports;

/**
 * The version of the driver module object given (as a test or a package's source imported it), read from the
 * installed copy it is: it says what the aliases really resolved to, whatever the setting claims.
 */
export const loadedDriverVersion = (specifier: DriverModule, loaded: object): string => {
	const mark = (loaded as Record<string, unknown>)[probe[specifier]];
	if (typeof mark !== "function") throw new Error(`not ${specifier}: it has no ${probe[specifier]}()`);
	for (const drivers of ["latest", "floor"] as const) {
		const copy = copyOf(specifier, drivers);
		if (copy.exports[probe[specifier]] === mark) return copy.version();
	}
	throw new Error(`this ${specifier} is neither the root's ${specifier} nor ${floorSpecifiers[specifier]}`);
};

/** The lowest version a semver range of the form `^x.y.z` (or an exact `x.y.z`) admits. */
export const rangeFloor = (range: string): string => {
	const match = /^\^?(\d+\.\d+\.\d+)$/.exec(range.trim());
	if (!match?.[1]) throw new Error(`cannot read the floor of ${JSON.stringify(range)}: expected ^x.y.z`);
	return match[1];
};

/**
 * The version of `driver` this run must be using: under MIDDY_CONN_DRIVERS=floor the lowest its package declares
 * (peer range of mysql2, dependency range of undici), so that the floor devDependency cannot drift from the range;
 * otherwise the version installed for the package.
 */
export const expectedDriverVersion = (driver: Driver, drivers: Drivers = driversSetting()): string => {
	const packageDir = new URL(`../packages/${driver === "mysql2" ? "mysql" : "http-pool"}/`, import.meta.url);
	const packageRequire = createRequire(new URL("package.json", packageDir));
	const manifest = packageRequire("./package.json") as {
		dependencies?: Record<string, string>;
		peerDependencies?: Record<string, string>;
	};
	const range = manifest.peerDependencies?.[driver] ?? manifest.dependencies?.[driver];
	if (!range) throw new Error(`${fileURLToPath(packageDir)} does not declare ${driver}`);
	if (drivers === "floor") return rangeFloor(range);
	return (packageRequire(`${driver}/package.json`) as { version: string }).version;
};
