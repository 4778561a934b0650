// Everything the soak's functions run against, on loopback: a throwaway MySQL (MariaDB) with the examples'
// schemas and one user per function, two partner APIs over HTTPS (one per function that calls out, so that each
// one's sockets are counted apart), the fixture bundled as `sam build` would, and one execution environment per
// function. Each piece is undone on every exit path (the caller runs `cleanups`).
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { bundleHandler, formatBytes } from "../../packages/test-harness/src/bundle-handler.ts";
import {
	type ExecutionEnvironment,
	startExecutionEnvironment,
} from "../../packages/test-harness/src/execution-environment.ts";
import {
	databaseEnvironment,
	MysqlAdmin,
	type TestDatabase,
} from "../../packages/test-harness/src/mysql-admin.ts";
import { type MysqlServer, startMysqlServer } from "../../packages/test-harness/src/mysql-server.ts";
import {
	AUDIT_PATH,
	ORDERS_WEBHOOK_PATH,
	type PartnerApi,
	RELAY_EVENTS_PATH,
	startPartnerApi,
} from "../../packages/test-harness/src/partner-api.ts";
import { applySqlFile, createDatabaseUser } from "../../packages/test-harness/src/sql-file.ts";
import { FUNCTIONS, type FunctionName } from "./directive.ts";
import { ACCOUNTS, type LogBook, PROBE_ACCOUNT, SETTINGS } from "./functions/common.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));

/** Something to undo on the way out. */
export type Cleanup = () => unknown;

/** Every line the functions print, by the request id of Lambda's JSON log format. */
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
			const parsed = JSON.parse(line) as { requestId?: unknown; message?: unknown };
			if (typeof parsed.requestId === "string") {
				requestId = parsed.requestId;
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

export interface World {
	readonly mysql: MysqlServer;
	admin(): MysqlAdmin;
	users: { orders: TestDatabase; writer: TestDatabase; reader: TestDatabase };
	partners: { orders: PartnerApi; relay: PartnerApi };
	environments: Record<FunctionName, ExecutionEnvironment>;
	/** The bearer token the soak's own partner requests carry. */
	partnerToken: string;
	/** Stops and starts the DB server in place (same port, same data), as a failover would. */
	restartDatabase(): Promise<void>;
}

export interface WorldOptions {
	say(line: string): void;
	/** A fixture bundle built elsewhere (a deliberately broken middleware, to see the soak catch it). */
	fixture?: string | undefined;
	cleanups: Cleanup[];
	logs: Logs;
}

export const startWorld = async ({ say, cleanups, logs, fixture }: WorldOptions): Promise<World> => {
	say("bundling the soak's fixture (the examples' handlers and the fault middleware) with esbuild");
	const work = mkdtempSync(join(tmpdir(), "middy-conn-soak-"));
	const removeWork = () => rmSync(work, { recursive: true, force: true });
	cleanups.push(removeWork);
	for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
		process.once(signal, () => {
			removeWork();
			if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
		});
	}
	const bundle = fixture
		? { outfile: fixture, bytes: statSync(fixture).size }
		: await bundleHandler({
				entry: join(root, "scripts", "soak", "fixture.ts"),
				outfile: join(work, "fixture.mjs"),
			});
	say(`  ${fixture ?? "fixture.mjs"}: ${formatBytes(bundle.bytes)}`);

	say("starting a throwaway MySQL (MariaDB in a temp dir)");
	const mysql = await startMysqlServer();
	cleanups.push(() => mysql.stop());
	let admin = await MysqlAdmin.connect(mysql.adminUrl);
	cleanups.push(() => admin.close());
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
	for (const account of [...ACCOUNTS, PROBE_ACCOUNT]) {
		await admin.query(
			`INSERT INTO \`${orders.database}\`.ledger_entries (account_id, amount_cents) VALUES (?, ?)`,
			[account, 100],
		);
	}
	say(`  ${mysql.version} on 127.0.0.1:${mysql.port}; users ${orders.user}, ${writer.user}, ${reader.user}`);

	const partnerToken = `tok-${randomBytes(18).toString("base64url")}`;
	const partnerOptions = { keepAliveTimeout: SETTINGS.partnerKeepAliveMs, auditToken: partnerToken };
	const partners = {
		orders: await startPartnerApi(partnerOptions),
		relay: await startPartnerApi(partnerOptions),
	};
	cleanups.push(
		() => partners.orders.close(),
		() => partners.relay.close(),
	);
	const caFile = join(work, "partner-ca.pem");
	writeFileSync(caFile, `${partners.orders.ca ?? ""}\n${partners.relay.ca ?? ""}`);
	say(
		`starting two partner HTTPS APIs (idle keep-alive ${SETTINGS.partnerKeepAliveMs} ms, not advertised): ${partners.orders.origin}, ${partners.relay.origin}`,
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
	};
	const started: ExecutionEnvironment[] = [];
	cleanups.push(() => Promise.all(started.map((environment) => environment.kill())));
	const environments = {} as Record<FunctionName, ExecutionEnvironment>;
	for (const fn of FUNCTIONS) {
		const environment = await startExecutionEnvironment({
			module: bundle.outfile,
			handler: "handler",
			functionName: fn,
			timeoutMs: SETTINGS.functionTimeoutMs,
			env: { ...common, ...envOf[fn], SOAK_FUNCTION: fn },
			onLog: (line) => logs.add(fn, line),
		});
		started.push(environment);
		environments[fn] = environment;
	}
	say(`4 execution environments: ${FUNCTIONS.join(", ")} (ledger-reader in pool mode, SELECT-only user)`);

	return {
		mysql,
		admin: () => admin,
		users: { orders, writer, reader },
		partners,
		environments,
		partnerToken,
		async restartDatabase() {
			await admin.close();
			await mysql.restart();
			admin = await MysqlAdmin.connect(mysql.adminUrl);
		},
	};
};
