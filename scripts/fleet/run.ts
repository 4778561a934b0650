// The fleet simulation itself (scripts/fleet.ts prints and records what this returns). Lambda scales a function out
// to many execution environments, and every one of them connects to the same MySQL server: this puts N
// environments (child processes, frozen with SIGSTOP between invocations, as the demo and the soak run them) in
// front of a throwaway MariaDB that accepts fewer connections than N, and sends them bursts: every environment
// invoked at once (or, with a burst size below N, the next few of them, taking turns), then every one frozen for a
// pause. Each contender (contract.ts) runs in its own fresh set of environments, one contender after the other,
// against the same server, and each with a database user of its own, so that the server's per-user counts are
// exact.
//
// What is measured, per contender:
// - outcomes: invocations succeeded, failures grouped by their error `code`;
// - the server's peak: `Max_used_connections` (reset with FLUSH STATUS before the contender) and the largest
//   `Threads_connected` sampled every 20 ms, both minus the driver's own connections (both count a connect the
//   server is about to refuse); and the most sessions of the contender's user sampled at once;
// - connections the contender's user holds while every environment is frozen (information_schema.PROCESSLIST at
//   the end of each pause), and after its environments are killed (a leak if not back to 0 within 5 s);
// - connect retries, from the stats line the function prints for each invocation (`connectRetries ?? 0`);
// - latency as the driver sees it (thaw, IPC, the handler; the import on a cold start);
// - rows committed: the sum of the contender's counters, against the invocations that succeeded.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import {
	bundleHandler,
	createDatabaseUser,
	databaseEnvironment,
	type ExecutionEnvironment,
	formatBytes,
	type InvocationOutcome,
	MysqlAdmin,
	startExecutionEnvironment,
	startMysqlServer,
	type TestDatabase,
} from "@middy-conn/test-harness";
import mysql from "mysql2/promise";
import { defer } from "../cleanup.ts";
import { codeVersion } from "./code-version.ts";
import {
	CONTENDERS,
	type ContenderKey,
	type FleetAnswer,
	type FleetEvent,
	STATS_MARK,
	type StatsLine,
} from "./contract.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));

/** MariaDB refuses to go lower: `SET GLOBAL max_connections = 4` leaves it at 10. */
const MARIADB_MIN_MAX_CONNECTIONS = 10;
/** How long the app user may take to reach 0 connections once its environments are killed. */
const LEAK_GRACE_MS = 5000;
const SAMPLE_EVERY_MS = 20;

export interface FleetSettings {
	quick: boolean;
	environments: number;
	/** Connections the server accepts from the app user: max_connections minus the driver's own. */
	appConnections: number;
	bursts: number;
	/**
	 * Environments invoked per burst: all of them (the default), or fewer, taking turns (burst b invokes the next
	 * `burstSize` after burst b-1's), so that the others stay frozen through a burst with whatever they hold, as
	 * environments do when traffic falls after a peak. Idle connections of those are what serverless-mysql reclaims.
	 */
	burstSize: number;
	/** How long every environment stays frozen after each burst. */
	pauseMs: number;
	/** The function's work with the connection held, per invocation. */
	workMs: number;
	/** The function's timeout (Lambda's deadline; Middy's early timeout fires 250 ms before it). */
	timeoutMs: number;
}

export const CONTENDER_LABELS: Record<ContenderKey, { label: string; setup: string }> = {
	scoped: {
		label: "scoped",
		setup: 'mysqlConnection({ mode: "scoped", config }): a connection per invocation, default options',
	},
	"scoped-no-retry": {
		label: "scoped, no retry",
		setup: 'mysqlConnection({ mode: "scoped", config, connectRetry: false })',
	},
	pool: {
		label: "pool",
		setup:
			'mysqlConnection({ mode: "pool", config: { ...config, connectionLimit: 1 } }): a warm pool per environment, serverPressure on (the default)',
	},
	"pool-no-pressure": {
		label: "pool, no serverPressure",
		setup:
			'mysqlConnection({ mode: "pool", config: { ...config, connectionLimit: 1 }, serverPressure: false }): warm pools kept whatever the load',
	},
	"serverless-mysql": {
		label: "serverless-mysql",
		setup:
			"serverless-mysql 2.1 with its defaults: one connection at module scope, query(), end() before returning",
	},
};

export interface Failure {
	count: number;
	/** The first message seen with this code. */
	sample: string;
}

export interface ContenderResult {
	key: ContenderKey;
	/** Why it did not run. */
	skipped?: string;
	invocations: number;
	succeeded: number;
	failures: Record<string, Failure>;
	/** Invocations that ended their environment (a timeout, a crash): the next one was a cold start. */
	environmentsLost: number;
	/** Max_used_connections after the contender, minus the driver's own connections. */
	peakServer: number;
	/** The largest Threads_connected sampled every 20 ms, minus the driver's own connections. */
	peakSampled: number;
	/** The most sessions of the contender's user sampled at once (PROCESSLIST, every 20 ms). */
	peakSessions: number;
	/** The contender user's connections at the end of each pause, every environment frozen. */
	heldWhileFrozen: number[];
	/** The contender user's connections 5 s after its environments were killed (0 unless something leaked). */
	leaked: number;
	connectRetries: number;
	/** Invocations whose stats line arrived. */
	statsLines: number;
	/** Every stats field seen, summed (numbers), counted (true) or tallied (strings). */
	statsFields: string[];
	latencyP50: number;
	latencyP99: number;
	/** The contender's counters summed: one per invocation that committed its UPDATE. */
	committed: number;
	/** Lines the function printed besides its stats, distinct, the first few. */
	otherLogs: { count: number; samples: string[] };
	elapsedMs: number;
}

export interface FleetRun {
	settings: FleetSettings;
	serverVersion: string;
	/** SET GLOBAL max_connections, as the server reports it back. */
	maxConnections: number;
	/** The driver's own (root) connections: the admin, the sampler and idle ballast ones. */
	driverConnections: number;
	ballast: number;
	/** Connections the app user could open before the server refused, measured before the contenders ran. */
	measuredAppCapacity: number;
	features: { connectRetry: boolean; serverPressure: boolean };
	/** The commit measured, and the code files that differed from it when the function was bundled. */
	codeVersion: string;
	results: ContenderResult[];
	/** Any contender user's connections after everything was killed, at the very end. */
	finalLeaks: number;
	elapsedMs: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export const percentile = (values: number[], p: number): number => {
	if (values.length === 0) return Number.NaN;
	const sorted = [...values].sort((a, b) => a - b);
	return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] as number;
};

/** The group a failed invocation is counted in: the error's `code`, or what the runtime said happened. */
const failureCode = (outcome: InvocationOutcome): string => {
	const { error, errorType } = outcome;
	// Sandbox.Timedout, Runtime.*: the environment itself ended; no handler error to read a code from.
	if (errorType && errorType !== "Handler") return errorType;
	if (error?.code) return error.code;
	return `${error?.name ?? "Error"} (no code)`;
};

/** Every field of the stats objects: numbers summed (times as median and max), true counted, strings tallied. */
const summarizeStats = (lines: Array<Record<string, unknown>>): string[] => {
	const keys = [...new Set(lines.flatMap((stats) => Object.keys(stats)))];
	return keys.map((key) => {
		const values = lines.map((stats) => stats[key]).filter((value) => value !== undefined);
		if (values.every((value) => typeof value === "number")) {
			const numbers = values as number[];
			if (/Ms$/.test(key)) {
				return `${key} median ${percentile(numbers, 50).toFixed(1)}, max ${Math.max(...numbers).toFixed(1)}`;
			}
			return `${key} ${numbers.reduce((sum, value) => sum + value, 0)}`;
		}
		if (values.every((value) => typeof value === "boolean")) {
			return `${key} ${values.filter(Boolean).length}/${values.length}`;
		}
		const tally = new Map<string, number>();
		for (const value of values) tally.set(String(value), (tally.get(String(value)) ?? 0) + 1);
		return `${key} {${[...tally].map(([value, count]) => `${value}: ${count}`).join(", ")}}`;
	});
};

/**
 * Every 20 ms on a connection of its own, until stopped: the largest Threads_connected (every connection the server
 * has, a connect it is about to refuse included) and the largest number of sessions of `user`. A connect that the
 * server is about to refuse shows in PROCESSLIST under its user too, as COMMAND 'Connect' or STATE 'login' (MariaDB
 * checks max_connections after it has read the user name): those are left out, to count only sessions in use.
 */
const startSampler = (sampler: MysqlAdmin, user: string) => {
	const peak = { threads: 0, sessions: 0 };
	let running = true;
	const loop = (async () => {
		while (running) {
			try {
				const [sample] = await sampler.query<mysql.RowDataPacket[]>(
					`SELECT (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'THREADS_CONNECTED') AS threads,
					 (SELECT COUNT(*) FROM information_schema.PROCESSLIST
					  WHERE USER = ? AND COMMAND <> 'Connect' AND COALESCE(STATE, '') <> 'login') AS sessions`,
					[user],
				);
				peak.threads = Math.max(peak.threads, Number(sample?.threads ?? 0));
				peak.sessions = Math.max(peak.sessions, Number(sample?.sessions ?? 0));
			} catch {
				// a sample lost is a sample lost: the server's own Max_used_connections is the other figure
			}
			await sleep(SAMPLE_EVERY_MS);
		}
	})();
	return {
		async stop() {
			running = false;
			await loop;
			return peak;
		},
	};
};

/** Opens connections as `db`'s user until the server refuses one: how many it really grants that user. */
const measureCapacity = async (db: TestDatabase, upTo: number): Promise<number> => {
	const open: mysql.Connection[] = [];
	try {
		while (open.length < upTo) {
			try {
				open.push(
					await mysql.createConnection({
						host: db.host,
						port: db.port,
						user: db.user,
						password: db.password,
						database: db.database,
						connectTimeout: 2000,
					}),
				);
			} catch (error) {
				if ((error as { code?: unknown }).code === "ER_CON_COUNT_ERROR") break;
				throw error;
			}
		}
		return open.length;
	} finally {
		await Promise.all(open.map((connection) => connection.end().catch(() => connection.destroy())));
	}
};

export interface RunOptions {
	settings: FleetSettings;
	say(line: string): void;
}

/** Runs the simulation; what it starts is undone by scripts/cleanup.ts's cleanups (the caller runs them). */
export const runFleet = async ({ settings, say }: RunOptions): Promise<FleetRun> => {
	const started = performance.now();
	// What is measured is what is bundled now.
	const code = codeVersion();
	say("bundling the fleet's function with esbuild, as `sam build` does");
	const work = mkdtempSync(join(tmpdir(), "middy-conn-fleet-"));
	defer(() => rmSync(work, { recursive: true, force: true }), { label: "the bundles' folder", sync: true });
	const bundle = await bundleHandler({
		entry: join(root, "scripts", "fleet", "functions", "contenders.ts"),
		outfile: join(work, "contenders.mjs"),
	});
	const probe = await bundleHandler({
		entry: join(root, "scripts", "fleet", "functions", "features.ts"),
		outfile: join(work, "features.mjs"),
	});
	const { features } = (await import(pathToFileURL(probe.outfile).href)) as {
		features: FleetRun["features"];
	};
	say(`  code measured: ${code}`);
	say(
		`  contenders.mjs ${formatBytes(bundle.bytes)}; the middleware has connectRetry: ${features.connectRetry ? "yes" : "no"}, serverPressure: ${features.serverPressure ? "yes" : "no"}`,
	);

	say("starting a throwaway MySQL (MariaDB in a temp dir)");
	// Always a server of its own, even with MYSQL_URL set: the run sets max_connections, which must never reach a
	// server shared with anything else.
	const server = await startMysqlServer({ dedicated: true });
	defer(() => server.stop(), { label: "the MySQL server" });
	const admin = await MysqlAdmin.connect(server.adminUrl);
	defer(() => admin.close(), { label: "the admin connection" });
	const sampler = await MysqlAdmin.connect(server.adminUrl);
	defer(() => sampler.close(), { label: "the sampler connection" });
	const db = await admin.createDatabase("fleet");
	await admin.query(
		`CREATE TABLE \`${db.database}\`.fleet_counters (contender VARCHAR(32) NOT NULL, slot INT NOT NULL, n INT NOT NULL DEFAULT 0, PRIMARY KEY (contender, slot)) ENGINE = InnoDB`,
	);
	const users = {} as Record<ContenderKey, TestDatabase>;
	for (const key of CONTENDERS) {
		// A user per contender (suffix ≤ 8 characters): the server counts each one's connections apart.
		const suffix = {
			scoped: "scoped",
			"scoped-no-retry": "noretry",
			pool: "pool",
			"pool-no-pressure": "poolnop",
			"serverless-mysql": "slsmysql",
		}[key];
		users[key] = await createDatabaseUser(admin, db, { suffix, privileges: ["SELECT", "UPDATE"] });
		const rows = Array.from({ length: settings.environments }, (_, slot) => [key, slot, 0]);
		await admin.query(`INSERT INTO \`${db.database}\`.fleet_counters (contender, slot, n) VALUES ?`, [rows]);
	}

	// The app's share of the server. Every connection counts against max_connections, the driver's (root, SUPER)
	// ones too; MariaDB lets one more SUPER connection in past the limit, which no app user can use. MariaDB's
	// floor is 10: below that, idle root connections ("ballast") take up the slots the app must not have. They count
	// in Threads_connected, as other clients of a shared server would: what serverless-mysql and the pool's
	// serverPressure read as the server's load includes them.
	const ownConnections = 2; // admin, sampler
	const maxConnections = Math.max(MARIADB_MIN_MAX_CONNECTIONS, settings.appConnections + ownConnections);
	const ballast = maxConnections - ownConnections - settings.appConnections;
	await admin.setGlobal("max_connections", maxConnections);
	const ballastConnections: mysql.Connection[] = [];
	defer(() => Promise.all(ballastConnections.map((connection) => connection.destroy())), {
		label: "the ballast connections",
	});
	for (let i = 0; i < ballast; i++) ballastConnections.push(await mysql.createConnection(server.adminUrl));
	const driverConnections = ownConnections + ballast;
	const reported = Number(await admin.getGlobal("max_connections"));
	const measuredAppCapacity = await measureCapacity(users.scoped, settings.appConnections + 5);
	await admin.settleConnections(users.scoped.user, 0, LEAK_GRACE_MS);
	say(
		`  ${server.version} on 127.0.0.1:${server.port}: max_connections = ${reported}, ${driverConnections} of them held by this driver (admin, sampler${ballast > 0 ? `, ${ballast} idle ballast` : ""}); the app user got ${measuredAppCapacity} before ER_CON_COUNT_ERROR`,
	);
	if (measuredAppCapacity !== settings.appConnections) {
		throw new Error(
			`the app user could open ${measuredAppCapacity} connections, not the ${settings.appConnections} planned: the simulation's setup is wrong`,
		);
	}

	// The stats line of every invocation, by request id; and what else the functions printed, per contender.
	const statsByRequest = new Map<string, Record<string, unknown>>();
	const otherLogs = new Map<ContenderKey, { count: number; samples: Set<string> }>();
	const onLog = (key: ContenderKey) => (line: string) => {
		if (line.startsWith(STATS_MARK)) {
			try {
				const parsed = JSON.parse(line.slice(STATS_MARK.length)) as StatsLine;
				statsByRequest.set(parsed.requestId, parsed.stats);
				return;
			} catch {
				// not ours after all: counted below
			}
		}
		const logs = otherLogs.get(key) ?? { count: 0, samples: new Set<string>() };
		logs.count++;
		if (logs.samples.size < 5) logs.samples.add(line.length > 220 ? `${line.slice(0, 220)}…` : line);
		otherLogs.set(key, logs);
	};

	const results: ContenderResult[] = [];
	for (const key of CONTENDERS) {
		const { label } = CONTENDER_LABELS[key];
		const missing =
			key === "scoped-no-retry" && !features.connectRetry
				? "connectRetry"
				: key === "pool-no-pressure" && !features.serverPressure
					? "serverPressure"
					: undefined;
		if (missing) {
			say(`contender "${label}": skipped, the middleware has no ${missing} option yet`);
			results.push({ ...emptyResult(key), skipped: `the middleware has no ${missing} option yet` });
			continue;
		}
		results.push(
			await runContender({
				key,
				settings,
				user: users[key],
				module: bundle.outfile,
				admin,
				sampler,
				driverConnections,
				statsByRequest,
				onLog: onLog(key),
				say,
				databaseName: db.database,
			}),
		);
		const logs = otherLogs.get(key);
		const last = results.at(-1);
		if (last && logs) last.otherLogs = { count: logs.count, samples: [...logs.samples] };
	}

	// Every environment of every contender is gone: none of their users may hold a connection any more.
	let finalLeaks = 0;
	for (const key of CONTENDERS)
		finalLeaks += await admin.settleConnections(users[key].user, 0, LEAK_GRACE_MS);

	return {
		settings,
		serverVersion: server.version,
		maxConnections: reported,
		driverConnections,
		ballast,
		measuredAppCapacity,
		features,
		codeVersion: code,
		results,
		finalLeaks,
		elapsedMs: performance.now() - started,
	};
};

const emptyResult = (key: ContenderKey): ContenderResult => ({
	key,
	invocations: 0,
	succeeded: 0,
	failures: {},
	environmentsLost: 0,
	peakServer: 0,
	peakSampled: 0,
	peakSessions: 0,
	heldWhileFrozen: [],
	leaked: 0,
	connectRetries: 0,
	statsLines: 0,
	statsFields: [],
	latencyP50: Number.NaN,
	latencyP99: Number.NaN,
	committed: 0,
	otherLogs: { count: 0, samples: [] },
	elapsedMs: 0,
});

interface ContenderOptions {
	key: ContenderKey;
	settings: FleetSettings;
	user: TestDatabase;
	module: string;
	admin: MysqlAdmin;
	sampler: MysqlAdmin;
	driverConnections: number;
	statsByRequest: Map<string, Record<string, unknown>>;
	onLog: (line: string) => void;
	say(line: string): void;
	databaseName: string;
}

const runContender = async (options: ContenderOptions): Promise<ContenderResult> => {
	const { key, settings, user, admin, sampler, driverConnections, say } = options;
	const started = performance.now();
	const result = emptyResult(key);
	const { label } = CONTENDER_LABELS[key];
	say(`contender "${label}": starting ${settings.environments} execution environments`);

	// Each one is kept as soon as it exists, so that a failure to start the others still kills it.
	const environments: ExecutionEnvironment[] = [];
	const killAll = defer(() => Promise.all(environments.map((environment) => environment.kill())), {
		label: `the ${key} environments`,
	});
	await Promise.all(
		Array.from({ length: settings.environments }, async (_, slot) => {
			environments[slot] = await startExecutionEnvironment({
				module: options.module,
				functionName: `fleet-${key}-${slot}`,
				timeoutMs: settings.timeoutMs,
				env: {
					...databaseEnvironment(user),
					FLEET_CONTENDER: key,
					FLEET_WORK_MS: String(settings.workMs),
				},
				onLog: options.onLog,
			});
		}),
	);

	// The peak is this contender's: the server's high-water mark starts again from the connections open now.
	await admin.query("FLUSH STATUS");
	const sampling = startSampler(sampler, user.user);
	const latencies: number[] = [];
	const requestIds: string[] = [];
	for (let burst = 0; burst < settings.bursts; burst++) {
		const burstStarted = performance.now();
		// Every environment at once, as a burst of traffic reaches a function scaled out to N environments; or the
		// next `burstSize` of them, the others staying frozen.
		const slots = Array.from(
			{ length: Math.min(settings.burstSize, environments.length) },
			(_, i) => (burst * settings.burstSize + i) % environments.length,
		);
		const outcomes = await Promise.all(
			slots.map((slot) => {
				const requestId = `${key}-${burst}-${slot}`;
				requestIds.push(requestId);
				const event: FleetEvent = { slot };
				return (environments[slot] as ExecutionEnvironment).invoke<FleetAnswer>(event, { requestId });
			}),
		);
		let failed = 0;
		for (const outcome of outcomes) {
			result.invocations++;
			// Measured by the harness in this process: from the thaw to the answer (the freeze after is not counted).
			latencies.push(outcome.latencyMs);
			if (outcome.ok) {
				result.succeeded++;
				continue;
			}
			failed++;
			const code = failureCode(outcome);
			const failure = result.failures[code] ?? { count: 0, sample: outcome.error?.message ?? "" };
			failure.count++;
			result.failures[code] = failure;
		}
		const burstMs = performance.now() - burstStarted;
		// Every environment is frozen now: whatever a contender keeps open between invocations is open on the server.
		await sleep(settings.pauseMs);
		const held = await admin.connectionsOf(user.user);
		result.heldWhileFrozen.push(held);
		say(
			`  burst ${burst + 1}/${settings.bursts}: ${outcomes.length - failed}/${outcomes.length} ok in ${(burstMs / 1000).toFixed(2)} s; ` +
				`then all frozen ${settings.pauseMs} ms, holding ${held} connection${held === 1 ? "" : "s"}`,
		);
	}
	const peak = await sampling.stop();
	const maxUsed = Number(await admin.status("Max_used_connections"));
	result.peakServer = maxUsed - driverConnections;
	result.peakSampled = peak.threads - driverConnections;
	result.peakSessions = peak.sessions;

	// Lambda reclaims the environments (SIGKILL, no shutdown hook): whatever they held must go with them.
	result.environmentsLost = environments.reduce(
		(sum, environment) => sum + environment.stats.crashes + environment.stats.timeouts,
		0,
	);
	await killAll();
	result.leaked = await admin.settleConnections(user.user, 0, LEAK_GRACE_MS);
	if (result.leaked > 0) {
		say(
			`  ✗ ${result.leaked} connection(s) of ${user.user} still open ${LEAK_GRACE_MS / 1000} s after the kill`,
		);
		// The next contender must start from a clean server all the same.
		await admin.killUser(user.user);
		await admin.settleConnections(user.user, 0, LEAK_GRACE_MS);
	}

	const stats = requestIds
		.map((requestId) => options.statsByRequest.get(requestId))
		.filter((line) => line !== undefined);
	result.statsLines = stats.length;
	result.connectRetries = stats.reduce((sum, line) => sum + Number(line.connectRetries ?? 0), 0);
	result.statsFields = summarizeStats(stats);
	result.latencyP50 = percentile(latencies, 50);
	result.latencyP99 = percentile(latencies, 99);
	const [committed] = await admin.query<mysql.RowDataPacket[]>(
		`SELECT COALESCE(SUM(n), 0) AS n FROM \`${options.databaseName}\`.fleet_counters WHERE contender = ?`,
		[key],
	);
	result.committed = Number(committed?.n ?? 0);
	result.elapsedMs = performance.now() - started;
	return result;
};
