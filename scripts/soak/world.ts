// Everything the soak's functions run against, on loopback: a throwaway MySQL (MariaDB) with the examples'
// schemas, the soak's own tables and one user per function, four partner APIs over HTTPS (one per function that
// calls out, so that each one's sockets are counted apart; ledger-batch and batch-lmi share one), the fixture
// bundled as `sam build` would, and one execution environment per function: a standard one (one invocation at a
// time, frozen in between) for each, but batch-lmi's, a Managed Instances one (several at once, never frozen).
// Each piece is registered for cleanup the moment it exists, and undone on every exit path (scripts/cleanup.ts).
//
// The DB server can be restarted in place while the soak runs (same port, same datadir): gracefully (SIGTERM: it
// ends its sessions with ER_SERVER_SHUTDOWN and flushes) or by a crash (SIGKILL: sockets reset, InnoDB recovers on
// start). The soak's own admin connection is replaced meanwhile; `admin()` hands out one that waits for a restart
// to be over and retries a statement that a restart cut off.
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
	AUDIT_PATH,
	applySqlFile,
	bundleHandler,
	createDatabaseUser,
	databaseEnvironment,
	formatBytes,
	type InvocationOutcome,
	type InvokeOptions,
	MysqlAdmin,
	type MysqlServer,
	ORDERS_WEBHOOK_PATH,
	type PartnerApi,
	type ProcessInfo,
	RELAY_EVENTS_PATH,
	startExecutionEnvironment,
	startManagedExecutionEnvironment,
	startMysqlServer,
	startPartnerApi,
	type TestDatabase,
} from "@middy-conn/test-harness";
import type { RowDataPacket } from "mysql2/promise";
import { defer } from "../cleanup.ts";
import { FUNCTIONS, type FunctionName, STREAM_ROWS, streamPayload } from "./directive.ts";
import { ACCOUNTS, type LogBook, PROBE_ACCOUNT, SETTINGS } from "./functions/common.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));

/**
 * Every line the functions print, by the request id of Lambda's JSON log format (`requestId`), or of the
 * Powertools Logger's (`function_request_id`: orders-api logs with it).
 */
export class Logs implements LogBook {
	readonly #byRequest = new Map<string, string[]>();
	readonly #onLine: (fn: FunctionName, line: string, requestId: string | undefined) => void;
	lines = 0;

	constructor(onLine: (fn: FunctionName, line: string, requestId: string | undefined) => void) {
		this.#onLine = onLine;
	}

	add(fn: FunctionName, line: string) {
		this.lines++;
		let requestId: string | undefined;
		try {
			const parsed = JSON.parse(line) as {
				requestId?: unknown;
				function_request_id?: unknown;
				message?: unknown;
			};
			const id = parsed.requestId ?? parsed.function_request_id;
			if (typeof id === "string") {
				requestId = id;
				const messages = this.#byRequest.get(requestId) ?? [];
				messages.push(String(parsed.message));
				this.#byRequest.set(requestId, messages);
			}
		} catch {
			// not the function's own log line (a runtime warning): scanned all the same
		}
		this.#onLine(fn, line, requestId);
	}

	messages(requestId: string): string[] {
		return this.#byRequest.get(requestId) ?? [];
	}
}

/** What the soak does with an execution environment, standard or Managed Instances. */
export interface SoakEnvironment {
	readonly functionName: string;
	readonly pid: number | undefined;
	readonly stats: { invocations: number; coldStarts: number; crashes: number; timeouts: number };
	invoke<TResult = unknown>(event: unknown, options?: InvokeOptions): Promise<InvocationOutcome<TResult>>;
	kill(): Promise<void>;
}

/** The admin statements the soak uses, on whatever admin connection is current (see the top of this file). */
export interface SoakAdmin {
	query: MysqlAdmin["query"];
	processlist(user?: string): Promise<ProcessInfo[]>;
	kill(id: number): Promise<void>;
	settleConnections(user: string, expected: number, timeoutMs?: number): Promise<number>;
}

export type RestartKind = "graceful" | "crash";

export interface SoakUsers {
	orders: TestDatabase;
	writer: TestDatabase;
	reader: TestDatabase;
	/** export-stream (scoped, transaction: true) */
	exporter: TestDatabase;
	/** ledger-batch (scoped, transaction: true) */
	batch: TestDatabase;
	/** batch-lmi (pool mode, transaction: true, several invocations at once) */
	lmi: TestDatabase;
}

export interface SoakPartners {
	orders: PartnerApi;
	relay: PartnerApi;
	/** ledger-batch and batch-lmi's reservations */
	batch: PartnerApi;
	/** export-stream's proxied bodies */
	exporter: PartnerApi;
}

export interface World {
	readonly mysql: MysqlServer;
	admin(): SoakAdmin;
	users: SoakUsers;
	partners: SoakPartners;
	environments: Record<FunctionName, SoakEnvironment>;
	/** The bearer token the soak's own partner requests carry. */
	partnerToken: string;
	/** Stops and starts the DB server in place (same port, same data), as a failover would. One at a time. */
	restartDatabase(kind?: RestartKind): Promise<void>;
	/** True while the DB server restarts. */
	readonly restarting: boolean;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** An error that says the admin connection is gone, rather than something about the statement. */
const isConnectionError = (error: unknown): boolean => {
	const { fatal, code } = (error ?? {}) as { fatal?: unknown; code?: unknown };
	return (
		fatal === true ||
		(typeof code === "string" &&
			/^(PROTOCOL_|ECONN|EPIPE|ER_SERVER_SHUTDOWN|ER_CONNECTION_KILLED|ETIMEDOUT)/.test(code))
	);
};

export interface WorldOptions {
	say(line: string): void;
	/** A fixture bundle built elsewhere (a deliberately broken middleware, to see the soak catch it). */
	fixture?: string | undefined;
	logs: Logs;
}

export const startWorld = async ({ say, logs, fixture }: WorldOptions): Promise<World> => {
	say("bundling the soak's fixture (the examples' handlers and the fault middleware) with esbuild");
	const work = mkdtempSync(join(tmpdir(), "middy-conn-soak-"));
	defer(() => rmSync(work, { recursive: true, force: true }), {
		label: "the soak's temp folder",
		sync: true,
	});
	const bundle = fixture
		? { outfile: fixture, bytes: statSync(fixture).size }
		: await bundleHandler({
				entry: join(root, "scripts", "soak", "fixture.ts"),
				outfile: join(work, "fixture.mjs"),
			});
	say(`  ${fixture ?? "fixture.mjs"}: ${formatBytes(bundle.bytes)}`);

	say("starting a throwaway MySQL (MariaDB in a temp dir)");
	const mysql = await startMysqlServer();
	defer(() => mysql.stop(), { label: "the MySQL server" });
	let admin = await MysqlAdmin.connect(mysql.adminUrl);
	// The admin connection current at the end (a restart replaces it).
	defer(() => admin.close(), { label: "the admin connection" });
	const orders = await admin.createDatabase("soak");
	await applySqlFile(orders, join(root, "examples", "orders-api", "schema.sql"));
	await applySqlFile(orders, join(root, "examples", "read-after-write", "schema.sql"));
	// A rule the database enforces and orders-api does not know of: an order with a RECALLED line fails in the
	// handler's transaction, after its first INSERT (the example's own test does the same).
	await admin.query(
		`ALTER TABLE \`${orders.database}\`.order_lines ADD CONSTRAINT soak_recalled CHECK (sku <> 'RECALLED')`,
	);
	const writer = await createDatabaseUser(admin, orders, {
		suffix: "writer",
		privileges: ["SELECT", "INSERT"],
	});
	const reader = await createDatabaseUser(admin, orders, { suffix: "reader", privileges: ["SELECT"] });
	const exporter = await createDatabaseUser(admin, orders, {
		suffix: "export",
		privileges: ["SELECT", "INSERT"],
	});
	const batch = await createDatabaseUser(admin, orders, {
		suffix: "batch",
		privileges: ["SELECT", "INSERT"],
	});
	const lmi = await createDatabaseUser(admin, orders, { suffix: "lmi", privileges: ["SELECT", "INSERT"] });
	// The soak's own tables: marker rows written in the background, ledger-batch's lines, export-stream's records
	// and the rows it streams.
	const table = (name: string) => `\`${orders.database}\`.${name}`;
	await admin.query(
		`CREATE TABLE ${table("soak_marks")} (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, token VARCHAR(64) NOT NULL, fn VARCHAR(32) NOT NULL, KEY marks_by_token (token)) ENGINE = InnoDB`,
	);
	await admin.query(
		`CREATE TABLE ${table("soak_batch_lines")} (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, batch_id VARCHAR(64) NOT NULL, line_no INT NOT NULL, amount_cents INT NOT NULL, KEY lines_by_batch (batch_id)) ENGINE = InnoDB`,
	);
	await admin.query(
		`CREATE TABLE ${table("soak_exports")} (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, export_id VARCHAR(64) NOT NULL, source_rows INT NOT NULL, partner_bytes INT NOT NULL, KEY exports_by_id (export_id)) ENGINE = InnoDB`,
	);
	await admin.query(
		`CREATE TABLE ${table("soak_stream_rows")} (id INT NOT NULL PRIMARY KEY, payload VARCHAR(255) NOT NULL) ENGINE = InnoDB`,
	);
	for (let first = 1; first <= STREAM_ROWS; first += 1000) {
		const rows = Array.from({ length: Math.min(1000, STREAM_ROWS - first + 1) }, (_, i) => [
			first + i,
			streamPayload(first + i),
		]);
		await admin.query(`INSERT INTO ${table("soak_stream_rows")} (id, payload) VALUES ?`, [rows]);
	}
	const pidFile = String(
		((await admin.query<RowDataPacket[]>("SELECT @@pid_file AS f"))[0] as { f: string }).f,
	);
	for (const account of [...ACCOUNTS, PROBE_ACCOUNT]) {
		await admin.query(
			`INSERT INTO \`${orders.database}\`.ledger_entries (account_id, amount_cents) VALUES (?, ?)`,
			[account, 100],
		);
	}
	say(
		`  ${mysql.version} on 127.0.0.1:${mysql.port}; users ${[orders, writer, reader, exporter, batch, lmi].map((u) => u.user).join(", ")}`,
	);

	const partnerToken = `tok-${randomBytes(18).toString("base64url")}`;
	const partnerOptions = { keepAliveTimeout: SETTINGS.partnerKeepAliveMs, auditToken: partnerToken };
	const partners: SoakPartners = {
		orders: await startPartnerApi(partnerOptions),
		relay: await startPartnerApi(partnerOptions),
		batch: await startPartnerApi(partnerOptions),
		exporter: await startPartnerApi(partnerOptions),
	};
	for (const [name, partner] of Object.entries(partners))
		defer(() => partner.close(), { label: `the ${name} partner API` });
	const caFile = join(work, "partner-ca.pem");
	writeFileSync(
		caFile,
		Object.values(partners)
			.map((partner) => partner.ca ?? "")
			.join("\n"),
	);
	say(
		`starting four partner HTTPS APIs (idle keep-alive ${SETTINGS.partnerKeepAliveMs} ms, not advertised): ${Object.values(
			partners,
		)
			.map((partner) => partner.origin)
			.join(", ")}`,
	);

	const database = databaseEnvironment;
	const common = {
		NODE_EXTRA_CA_CERTS: caFile,
		SOAK_BODY_TIMEOUT_MS: String(SETTINGS.bodyTimeoutMs),
		SOAK_PARTNER_TOKEN: partnerToken,
		SOAK_AUDIT_PATH: AUDIT_PATH,
	};
	const envOf: Record<FunctionName, Record<string, string>> = {
		"orders-api": {
			...database(orders),
			WEBHOOK_ORIGIN: partners.orders.origin,
			WEBHOOK_PATH: ORDERS_WEBHOOK_PATH,
		},
		"ledger-writer": database(writer),
		"ledger-reader": { ...database(reader), DB_MODE: "pool" },
		"webhook-relay": {
			PARTNER_ORIGIN: partners.relay.origin,
			RELAY_PATH: RELAY_EVENTS_PATH,
			RELAY_CONCURRENCY: String(SETTINGS.relayConcurrency),
		},
		"export-stream": { ...database(exporter), PARTNER_ORIGIN: partners.exporter.origin },
		"ledger-batch": {
			...database(batch),
			PARTNER_ORIGIN: partners.batch.origin,
			PARTNER_PATH: RELAY_EVENTS_PATH,
		},
		"batch-lmi": {
			...database(lmi),
			DB_MODE: "pool",
			DB_CONNECTION_LIMIT: String(SETTINGS.lmiPoolLimit),
			PARTNER_ORIGIN: partners.batch.origin,
			PARTNER_PATH: RELAY_EVENTS_PATH,
			SOAK_CONCURRENT: "1",
		},
	};
	const started: SoakEnvironment[] = [];
	defer(() => Promise.all(started.map((environment) => environment.kill())), {
		label: "the execution environments",
	});
	const environments = {} as Record<FunctionName, SoakEnvironment>;
	for (const fn of FUNCTIONS) {
		const options = {
			module: bundle.outfile,
			handler: "handler",
			functionName: fn,
			timeoutMs: SETTINGS.functionTimeoutMs,
			env: { ...common, ...envOf[fn], SOAK_FUNCTION: fn },
			onLog: (line: string) => logs.add(fn, line),
		};
		const environment =
			fn === "batch-lmi"
				? await startManagedExecutionEnvironment({ ...options, maxConcurrency: SETTINGS.lmiMaxConcurrency })
				: await startExecutionEnvironment(options);
		started.push(environment);
		environments[fn] = environment;
	}
	say(
		`${FUNCTIONS.length} execution environments: ${FUNCTIONS.join(", ")} (ledger-reader in pool mode, SELECT-only user; batch-lmi a Managed Instances one, up to ${SETTINGS.lmiMaxConcurrency} invocations at once, pool mode)`,
	);

	let restarting: Promise<void> | undefined;
	const restartDatabase = async (kind: RestartKind = "graceful") => {
		while (restarting) await restarting;
		let done = () => {};
		restarting = new Promise<void>((resolve) => {
			done = resolve;
		});
		try {
			const old = admin;
			if (kind === "crash") {
				// As a host failure would: no shutdown, every session's socket reset, InnoDB recovery at start.
				process.kill(Number(readFileSync(pidFile, "utf8").trim()), "SIGKILL");
			}
			await Promise.race([old.close(), sleep(1000)]);
			await mysql.restart();
			admin = await MysqlAdmin.connect(mysql.adminUrl);
		} finally {
			restarting = undefined;
			done();
		}
	};

	/** Runs `work` on the current admin connection, after any restart, again if a restart cut it off. */
	const withAdmin = async <T>(work: (current: MysqlAdmin) => Promise<T>): Promise<T> => {
		for (let attempt = 1; ; attempt++) {
			while (restarting) await restarting;
			const used = admin;
			try {
				return await work(used);
			} catch (error) {
				if (attempt >= 5 || !(restarting || used !== admin || isConnectionError(error))) throw error;
				await sleep(50);
			}
		}
	};
	const soakAdmin: SoakAdmin = {
		query: ((sql: string, values?: unknown[]) =>
			withAdmin((current) => current.query(sql, values))) as MysqlAdmin["query"],
		processlist: (user) => withAdmin((current) => current.processlist(user)),
		kill: (id) => withAdmin((current) => current.kill(id)),
		settleConnections: (user, expected, timeoutMs) =>
			withAdmin((current) => current.settleConnections(user, expected, timeoutMs)),
	};

	return {
		mysql,
		admin: () => soakAdmin,
		users: { orders, writer, reader, exporter, batch, lmi },
		partners,
		environments,
		partnerToken,
		restartDatabase,
		get restarting() {
			return restarting !== undefined;
		},
	};
};
