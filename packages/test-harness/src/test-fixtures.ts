// Vitest fixtures: the setup every test file used to copy (a database of its own, HTTP servers, the warm pools
// closed after each test), registered as vitest hooks by one call each. Import them from
// `@middy-conn/test-harness/test-fixtures`: the harness index does not export them, so that the scripts and the
// Lambda functions that import the harness (demo, bench, soak) do not load vitest.
//
// Each `use…` call registers its hooks where it is called (file scope, or inside a `describe`) and returns its
// resources at once, ready to be captured by the file's helpers: they are filled in by the `beforeAll` and can be
// used from any test or hook, not at module scope (they throw there, with a message saying so).
//
// Teardown order: vitest runs `afterEach`/`afterAll` hooks in the reverse order of their registration
// (`sequence.hooks: "stack"`, set in vitest.config.ts), so call `useTestDatabase`/`useHttpServer` before
// `usePoolCleanup`: the pools are closed first, then the database settles, then the servers close.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { afterAll, afterEach, beforeAll, vi } from "vitest";
import { type Bundle, bundleHandler, describeBundle } from "./bundle-handler.ts";
import {
	type ExecutionEnvironment,
	type ExecutionEnvironmentOptions,
	startExecutionEnvironment,
} from "./execution-environment.ts";
import {
	type HttpServerOptions,
	type RouteHandler,
	startHttpServer,
	type TestHttpServer,
} from "./http-server.ts";
import { MysqlAdmin, type TestDatabase } from "./mysql-admin.ts";
import { freePort } from "./mysql-server.ts";
import {
	type LoopbackServer,
	type MysqlTlsServer,
	startMysqlTlsServer,
	startSilentServer,
} from "./unreachable-servers.ts";

/**
 * A stand-in for an object that exists only once `beforeAll` has run: every property read goes to the current
 * object (methods bound to it, so private fields work); reading before it is set throws.
 */
const lateBound = <T extends object>(what: string) => {
	let current: T | undefined;
	const get = (): T => {
		if (current === undefined) {
			throw new Error(`${what} is set up in beforeAll: use it inside a test or a hook, not at module scope`);
		}
		return current;
	};
	const value = new Proxy({} as T, {
		get(_target, key) {
			const target = get();
			const property: unknown = Reflect.get(target, key, target);
			return typeof property === "function" ? property.bind(target) : property;
		},
		has: (_target, key) => Reflect.has(get(), key),
		set: () => {
			throw new TypeError(`${what} is read-only here`);
		},
	});
	return {
		value,
		set(next: T | undefined) {
			current = next;
		},
	};
};

export interface TestDatabaseOptions {
	/**
	 * Tables to create once, before the file's tests, as `name (columns) options`: each becomes
	 * `CREATE TABLE \`<database>\`.<definition>`.
	 */
	tables?: string[];
	/** Runs once after the tables are created (rows the tests read, for example). */
	seed?: (admin: MysqlAdmin, db: TestDatabase) => Promise<unknown>;
	/** After each test: empty these tables (`DELETE FROM`), for tests that count rows. */
	clear?: string[];
	/**
	 * After each test (and after `clear`): wait, bounded at 2 s, until the database user has no connection left
	 * (a closed socket takes a moment to leave the server's processlist). With `"kill"`, kill whatever is still
	 * there afterwards: a test that failed may have left sessions behind, and they must not fail the next test too.
	 */
	settle?: "wait" | "kill";
}

export interface TestDatabaseFixture {
	/** An administrative connection to the run's server (MysqlAdmin.connect()), for server-side assertions. */
	admin: MysqlAdmin;
	/** The file's own database and user (MysqlAdmin#createDatabase), dropped after the file's tests. */
	db: TestDatabase;
}

/**
 * A database and user of this file's own on the run's MySQL server, with an admin connection: created in
 * `beforeAll` (with `tables` and `seed`), settled after each test as `options` ask, dropped in `afterAll`.
 * `db` is a plain object (spread it, pass it to configOf): its fields are filled in by the `beforeAll`.
 */
export function useTestDatabase(prefix: string, options: TestDatabaseOptions = {}): TestDatabaseFixture {
	const admin = lateBound<MysqlAdmin>(`the admin connection of useTestDatabase("${prefix}")`);
	const db = {} as TestDatabase;
	let connected: MysqlAdmin | undefined;
	let created: TestDatabase | undefined;

	beforeAll(async () => {
		connected = await MysqlAdmin.connect();
		admin.set(connected);
		created = await connected.createDatabase(prefix);
		Object.assign(db, created);
		for (const table of options.tables ?? []) {
			await connected.query(`CREATE TABLE \`${created.database}\`.${table}`);
		}
		await options.seed?.(connected, created);
	});

	if (options.clear?.length || options.settle) {
		afterEach(async () => {
			if (!connected || !created) return;
			for (const table of options.clear ?? []) {
				await connected.query(`DELETE FROM \`${created.database}\`.\`${table}\``);
			}
			if (!options.settle) return;
			const left = await connected.settleConnections(created.user, 0);
			if (left !== 0 && options.settle === "kill") await connected.killUser(created.user);
		});
	}

	afterAll(async () => {
		if (connected && created) await connected.dropDatabase(created);
		await connected?.close();
		admin.set(undefined);
	});

	return { admin: admin.value, db };
}

export interface HttpServerFixtureOptions extends HttpServerOptions {
	/** Routes to add once the server is up (TestHttpServer#route): exact path → handler. */
	routes?: Record<string, RouteHandler>;
	/** After each test, zero the server's counters and empty `received` (TestHttpServer#resetStats). Default true. */
	resetStats?: boolean;
}

/**
 * A real HTTP/HTTPS server (startHttpServer) for this file's tests: started in `beforeAll` with `routes` added,
 * its stats reset after each test, closed in `afterAll`.
 */
export function useHttpServer(options: HttpServerFixtureOptions = {}): TestHttpServer {
	const { routes = {}, resetStats = true, ...serverOptions } = options;
	const server = lateBound<TestHttpServer>("the server of useHttpServer()");
	let started: TestHttpServer | undefined;

	beforeAll(async () => {
		started = await startHttpServer(serverOptions);
		server.set(started);
		for (const [path, handler] of Object.entries(routes)) started.route(path, handler);
	});

	if (resetStats) {
		afterEach(() => {
			started?.resetStats();
		});
	}

	afterAll(async () => {
		await started?.close();
		server.set(undefined);
	});

	return server.value;
}

export interface UnreachablePeers {
	/** Accepts TCP connections and never sends a byte (startSilentServer). */
	silent: LoopbackServer;
	/** A MySQL server offering TLS with a certificate nobody trusts (startMysqlTlsServer). */
	mysqlTls: MysqlTlsServer;
	/** A loopback port nothing listens on (freePort): a connection to it is refused. */
	closedPort: number;
}

/**
 * Peers that are there and yet reach nothing, for the tests of configs that fail: started in `beforeAll`, closed in
 * `afterAll`.
 */
export function useUnreachablePeers(): UnreachablePeers {
	const peers = lateBound<UnreachablePeers>("the peers of useUnreachablePeers()");
	const started: Partial<UnreachablePeers> = {};

	beforeAll(async () => {
		started.silent = await startSilentServer();
		started.mysqlTls = await startMysqlTlsServer();
		started.closedPort = await freePort();
		peers.set(started as UnreachablePeers);
	});

	afterAll(async () => {
		await Promise.all([started.silent?.close(), started.mysqlTls?.close()]);
		peers.set(undefined);
	});

	return peers.value;
}

export interface FunctionBundleFixture {
	/** A temp folder of the file's own (the bundle goes there; so can a CA file), removed after the file's tests. */
	readonly work: string;
	/** Bundles the handler into `work` as `sam build` does (bundleHandler), and prints its size. */
	bundle(): Promise<Bundle>;
	/** Starts a Lambda-like environment (startExecutionEnvironment), killed after the file's tests. */
	start(options: ExecutionEnvironmentOptions): Promise<ExecutionEnvironment>;
}

/**
 * A deployable artifact's test: `entry` (an example's handler.ts) bundled into a temp folder and run in Lambda-like
 * processes, which are killed and the folder removed in `afterAll`. Call it after the fixtures of the servers the
 * function talks to: its `afterAll` then runs first, and the function's processes end before their servers.
 */
export function useFunctionBundle(entry: string): FunctionBundleFixture {
	const work = mkdtempSync(join(tmpdir(), `middy-conn-${basename(dirname(entry))}-`));
	const environments: ExecutionEnvironment[] = [];

	afterAll(async () => {
		await Promise.all(environments.splice(0).map((environment) => environment.kill()));
		rmSync(work, { recursive: true, force: true });
	});

	return {
		work,
		async bundle() {
			const bundle = await bundleHandler({
				entry,
				outfile: join(work, basename(entry).replace(/\.ts$/, ".mjs")),
			});
			console.log(`bundle size: ${describeBundle(bundle)}`);
			return bundle;
		},
		async start(options) {
			const environment = await startExecutionEnvironment(options);
			environments.push(environment);
			return environment;
		},
	};
}

/**
 * Closes the packages' warm pools after each test (pass closeMysqlPools, closeHttpPools: the harness does not
 * depend on the packages it tests), one after the other in the order given, so that no test inherits a warm
 * connection from the one before.
 */
export function usePoolCleanup(...closers: (() => Promise<unknown>)[]): void {
	afterEach(async () => {
		for (const close of closers) await close();
	});
}

/** One call to a recordingLogger's logger. */
export interface LoggedLine {
	level: "info" | "warn" | "error";
	message: string;
	extra: unknown[];
}

/**
 * A logger shaped like console and the Powertools Logger (the middlewares' `logger` option) that records every
 * call, and keeps the test's output quiet: `lines` in the order they came, and each method a vitest spy, for
 * `expect(logger.warn).toHaveBeenCalledWith(…)`.
 */
export const recordingLogger = () => {
	const lines: LoggedLine[] = [];
	const at = (level: LoggedLine["level"]) =>
		vi.fn<(message: string, ...extra: unknown[]) => void>((message, ...extra) => {
			lines.push({ level, message, extra });
		});
	return { lines, logger: { info: at("info"), warn: at("warn"), error: at("error") } };
};

/** Settles a promise into its outcome, so a test can assert on a rejection without try/catch. */
export const outcome = <T>(promise: Promise<T>): Promise<{ value?: T; error?: unknown }> =>
	promise.then(
		(value) => ({ value }),
		(error: unknown) => ({ error }),
	);

export interface EventuallyOptions {
	/** Give up after this long (default 2000 ms): a bound for a failing test, not a timing claim. */
	timeoutMs?: number;
	/** Between two checks (default 10 ms). */
	everyMs?: number;
}

/** Polls (bounded) until `check` holds; returns whether it did. */
export const eventually = async (
	check: () => boolean | Promise<boolean>,
	{ timeoutMs = 2000, everyMs = 10 }: EventuallyOptions = {},
): Promise<boolean> => {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		if (await check()) return true;
		if (Date.now() >= deadline) return false;
		await new Promise((resolve) => setTimeout(resolve, everyMs));
	}
};

/** Settles `promise` into its outcome, or says it did not settle within `ms` (a bound, not a timing claim). */
export const within = async <T>(promise: Promise<T>, ms: number) => {
	let timer: NodeJS.Timeout | undefined;
	const expired = new Promise<{ settled: false; value?: T; error?: unknown }>((resolve) => {
		timer = setTimeout(() => resolve({ settled: false }), ms);
	});
	try {
		return await Promise.race([outcome(promise).then((result) => ({ settled: true, ...result })), expired]);
	} finally {
		clearTimeout(timer);
	}
};
