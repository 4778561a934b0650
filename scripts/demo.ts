// The README's first command, `./run demo`: the example functions run as Lambda runs them, and a report of what
// the middlewares did, counted by the servers on the other side of every connection.
//
// - Each function is bundled by esbuild (the artifact `sam build` deploys) and runs in its own Node process: one
//   execution environment, with a cold start and then warm invocations.
// - After every invocation the process is frozen (SIGSTOP) and it is thawed (SIGCONT) for the next, as Lambda
//   does. Between bursts of invocations every process stays frozen, sometimes longer than the partner API's
//   1 s keep-alive timeout: the partner closes those idle connections while their owner cannot notice.
// - A throwaway MySQL (MariaDB) and the partner's HTTPS API run on 127.0.0.1 and count what they see.
//
// It exits 0 only if every invariant held: no database connection left open, every background notification
// and every relayed event delivered exactly once, every read after a write fresh, and no unexpected failure.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
	applySqlFile,
	bundleHandler,
	createDatabaseUser,
	databaseEnvironment,
	type ExecutionEnvironment,
	formatBytes,
	httpApiEvent,
	type InvocationOutcome,
	MysqlAdmin,
	type MysqlServer,
	ORDERS_WEBHOOK_PATH,
	type PartnerApi,
	RELAY_EVENTS_PATH,
	sqsEvent,
	startExecutionEnvironment,
	startMysqlServer,
	startPartnerApi,
	type TestDatabase,
} from "@middy-conn/test-harness";
import type { APIGatewayProxyStructuredResultV2, SQSBatchResponse } from "aws-lambda";
import { defer, runScript } from "./cleanup.ts";

const BURSTS = 8;
/** How long every process stays frozen before each burst after the first (ms). */
const FREEZES_MS = [250, 1500, 250, 2000, 300, 1500, 250];
const PARTNER_KEEP_ALIVE_MS = 1000;
const READER_POOL_LIMIT = 2;
const RELAY_CONCURRENCY = 3;

const root = fileURLToPath(new URL("..", import.meta.url));
const started = performance.now();
const seconds = () => ((performance.now() - started) / 1000).toFixed(1).padStart(5);
const say = (line: string) => console.log(`[${seconds()}s] ${line}`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Sample {
	fn: string;
	cold: boolean;
	latencyMs: number;
}

/** What the demo saw, and every invariant that did not hold. */
const record = {
	samples: [] as Sample[],
	/** Invocations that failed on purpose (a bad order, an account with no entries), answered as designed. */
	expectedErrors: 0,
	violations: [] as string[],
	ordersCreated: [] as number[],
	orderReads: { fresh: 0, total: 0 },
	ledgerReads: { fresh: 0, total: 0 },
	relay: { sent: new Set<string>(), reportedFailures: 0, expectedFailures: 0 },
	leakChecks: { passed: 0, total: 0 },
	/** Idle keep-alive connections the partner closed while the functions holding them were frozen. */
	closedWhileFrozen: 0,
	longFreezes: 0,
};

const violation = (message: string) => {
	record.violations.push(message);
	console.log(`        ✗ ${message}`);
};

/** Runs one invocation and records its latency; an unexpected failure is a violation. */
const invoke = async <T>(
	environment: ExecutionEnvironment,
	event: unknown,
	expectFailure = false,
): Promise<InvocationOutcome<T>> => {
	const outcome = await environment.invoke<T>(event);
	record.samples.push({ fn: environment.functionName, cold: outcome.cold, latencyMs: outcome.latencyMs });
	if (!outcome.ok && expectFailure) record.expectedErrors++;
	else if (!outcome.ok) {
		violation(`${environment.functionName} failed: ${outcome.errorType} ${outcome.error?.message}`);
		for (const line of environment.logs().slice(-10)) console.log(`          | ${line}`);
	}
	return outcome;
};

interface Functions {
	orders: ExecutionEnvironment;
	writer: ExecutionEnvironment;
	reader: ExecutionEnvironment;
	relay: ExecutionEnvironment;
}

const body = (outcome: InvocationOutcome<APIGatewayProxyStructuredResultV2>) =>
	JSON.parse(outcome.result?.body ?? "null");

/** orders-api: three orders, a bad one, and each good one read back by the same (warm) function. */
const ordersBurst = async ({ orders }: Functions, burst: number) => {
	const created: number[] = [];
	for (let i = 0; i < 3; i++) {
		const outcome = await invoke<APIGatewayProxyStructuredResultV2>(
			orders,
			httpApiEvent({
				method: "POST",
				path: "/orders",
				routeKey: "POST /orders",
				body: {
					customerId: `customer-${burst}-${i}`,
					currency: "EUR",
					lines: [
						{ sku: "TEA", quantity: i + 1, unitPriceCents: 450 },
						{ sku: "MUG", quantity: 1, unitPriceCents: 1200 },
					],
				},
			}),
		);
		if (outcome.result?.statusCode === 201) created.push(body(outcome).id);
		else if (outcome.ok)
			violation(`POST /orders answered ${outcome.result?.statusCode}: ${outcome.result?.body}`);
	}
	const bad = await invoke<APIGatewayProxyStructuredResultV2>(
		orders,
		httpApiEvent({ method: "POST", path: "/orders", routeKey: "POST /orders", body: { currency: "EUR" } }),
	);
	if (bad.result?.statusCode === 400) record.expectedErrors++;
	else violation(`a bad order was answered ${bad.result?.statusCode}, not 400`);
	for (const id of created) {
		const read = await invoke<APIGatewayProxyStructuredResultV2>(
			orders,
			httpApiEvent({
				method: "GET",
				path: `/orders/${id}`,
				routeKey: "GET /orders/{id}",
				pathParameters: { id: String(id) },
			}),
		);
		record.orderReads.total++;
		if (read.result?.statusCode === 200 && body(read).lines?.length === 2) record.orderReads.fresh++;
		else violation(`GET /orders/${id} right after its POST answered ${read.result?.statusCode}`);
	}
	record.ordersCreated.push(...created);
};

const balances = new Map<string, number>();

/** read-after-write: writes by one function, reads by another (warm, pool mode), with a failed read between. */
const ledgerBurst = async ({ writer, reader }: Functions, burst: number) => {
	for (let i = 0; i < 3; i++) {
		const accountId = `acct-${i}`;
		const amountCents = (burst + 1) * 100 + i;
		const written = await invoke(writer, { accountId, amountCents });
		if (written.ok) balances.set(accountId, (balances.get(accountId) ?? 0) + amountCents);
		if (i === 1) {
			// Fails inside its transaction: the trap that makes a module-level connection read stale data.
			await invoke(reader, { accountId: "nobody", statement: true }, true);
		}
		const read = await invoke<{ balanceCents: number }>(reader, { accountId, statement: i === 2 });
		record.ledgerReads.total++;
		if (read.result?.balanceCents === balances.get(accountId)) record.ledgerReads.fresh++;
		else
			violation(
				`stale read: ${accountId} balance ${read.result?.balanceCents}, committed ${balances.get(accountId)}`,
			);
	}
};

/** Records SQS would deliver again: the ones the last batch reported as failed. */
let redeliveries: Array<{ messageId: string; body: unknown }> = [];

/** webhook-relay: a batch of six events (one that the partner refuses once), plus last burst's redeliveries. */
const relayBurst = async ({ relay }: Functions, burst: number) => {
	const fresh = Array.from({ length: 6 }, (_, i) => ({
		messageId: `msg-${burst}-${i}`,
		body: { type: "stock.changed", sku: `SKU-${i}`, ...(i === 4 ? { flaky: true } : {}) },
	}));
	for (const message of fresh) record.relay.sent.add(message.messageId);
	const batch = [...redeliveries, ...fresh];
	const outcome = await invoke<SQSBatchResponse>(relay, sqsEvent(batch));
	const failed = new Set(outcome.result?.batchItemFailures.map((failure) => failure.itemIdentifier) ?? []);
	// The partner refuses a flaky event once: exactly those, and nothing else, must come back as failures.
	const expected = fresh
		.filter((message) => (message.body as { flaky?: boolean }).flaky)
		.map((m) => m.messageId);
	record.relay.reportedFailures += failed.size;
	record.relay.expectedFailures += expected.length;
	if (failed.size !== expected.length || !expected.every((id) => failed.has(id))) {
		violation(`relay reported [${[...failed]}] as failed, expected [${expected}]`);
	}
	redeliveries = batch.filter((message) => failed.has(message.messageId));
};

const percentile = (values: number[], p: number) => {
	if (values.length === 0) return Number.NaN;
	const sorted = [...values].sort((a, b) => a - b);
	return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
};

const ms = (value: number) => (Number.isNaN(value) ? "-" : `${value.toFixed(1)} ms`);

// Everything started here is undone on every exit path, Ctrl-C included (scripts/cleanup.ts): the bundles'
// folder, the MySQL server, the admin connection, the partner API, the execution environments.
const main = async (): Promise<number> => {
	console.log("middy-conn demo: the example functions, run as AWS Lambda runs them");
	console.log(
		"  one process per function (a cold start, then warm invocations), frozen with SIGSTOP the moment an invocation",
	);
	console.log(
		`  returns and thawed with SIGCONT for the next; a partner API over HTTPS that drops idle connections after ${PARTNER_KEEP_ALIVE_MS / 1000} s.`,
	);
	console.log("");

	say("bundling the examples with esbuild, as `sam build` does");
	const work = mkdtempSync(join(tmpdir(), "middy-conn-demo-"));
	defer(() => rmSync(work, { recursive: true, force: true }), { label: "the bundles' folder", sync: true });
	const bundles: Record<string, string> = {};
	const sizes: string[] = [];
	for (const example of ["orders-api", "read-after-write", "webhook-relay"]) {
		const bundle = await bundleHandler({
			entry: join(root, "examples", example, "handler.ts"),
			outfile: join(work, example, "handler.mjs"),
		});
		bundles[example] = bundle.outfile;
		sizes.push(`${example} ${formatBytes(bundle.bytes)}`);
	}
	say(`  ${sizes.join(" · ")} (mysql2 and undici inside)`);

	say("starting a throwaway MySQL (MariaDB in a temp dir; the first run on a fresh machine installs it)");
	const mysqlServer: MysqlServer = await startMysqlServer();
	defer(() => mysqlServer.stop(), { label: "the MySQL server" });
	say(`  ${mysqlServer.version} on 127.0.0.1:${mysqlServer.port}`);
	const admin = await MysqlAdmin.connect(mysqlServer.adminUrl);
	defer(() => admin.close(), { label: "the admin connection" });
	const db: TestDatabase = await admin.createDatabase("demo");
	await applySqlFile(db, join(root, "examples", "orders-api", "schema.sql"));
	await applySqlFile(db, join(root, "examples", "read-after-write", "schema.sql"));
	const readerDb = await createDatabaseUser(admin, db, { suffix: "reader", privileges: ["SELECT"] });

	say(
		`starting the partner's HTTPS API (idle keep-alive timeout ${PARTNER_KEEP_ALIVE_MS} ms, not advertised)`,
	);
	const partner: PartnerApi = await startPartnerApi({ keepAliveTimeout: PARTNER_KEEP_ALIVE_MS });
	defer(() => partner.close(), { label: "the partner API" });
	const caFile = join(work, "partner-ca.pem");
	writeFileSync(caFile, partner.ca ?? "");

	const database = databaseEnvironment;
	// NODE_EXTRA_CA_CERTS is how a Lambda function trusts a private CA; the handlers themselves are unchanged.
	const partnerEnv = { NODE_EXTRA_CA_CERTS: caFile };
	const environments: ExecutionEnvironment[] = [];
	defer(() => Promise.all(environments.map((environment) => environment.kill())), {
		label: "the execution environments",
	});
	const start = async (name: string, bundle: string, handler: string, env: Record<string, string>) => {
		const environment = await startExecutionEnvironment({
			module: bundle,
			handler,
			functionName: name,
			timeoutMs: 10_000,
			env,
		});
		environments.push(environment);
		return environment;
	};
	const fns: Functions = {
		orders: await start("orders-api", bundles["orders-api"] as string, "handler", {
			...database(db),
			...partnerEnv,
			WEBHOOK_ORIGIN: partner.origin,
			WEBHOOK_PATH: ORDERS_WEBHOOK_PATH,
		}),
		writer: await start("ledger-writer", bundles["read-after-write"] as string, "writer", database(db)),
		reader: await start("ledger-reader", bundles["read-after-write"] as string, "reader", {
			...database(readerDb),
			DB_MODE: "pool",
		}),
		relay: await start("webhook-relay", bundles["webhook-relay"] as string, "handler", {
			...partnerEnv,
			PARTNER_ORIGIN: partner.origin,
			RELAY_PATH: RELAY_EVENTS_PATH,
			RELAY_CONCURRENCY: String(RELAY_CONCURRENCY),
		}),
	};
	say(
		`4 execution environments: orders-api, ledger-writer, ledger-reader (pool mode, SELECT-only user), webhook-relay`,
	);

	const connectionsBefore = await admin.connectionsTotal();

	for (let burst = 0; burst < BURSTS; burst++) {
		const freeze = burst === 0 ? 0 : (FREEZES_MS[burst - 1] ?? 0);
		const openBeforeFreeze = partner.server.stats.open;
		if (freeze > 0) await sleep(freeze);
		if (freeze > PARTNER_KEEP_ALIVE_MS) {
			record.longFreezes++;
			record.closedWhileFrozen += openBeforeFreeze - partner.server.stats.open;
		}
		const invocationsBefore = record.samples.length;
		const violationsBefore = record.violations.length;
		const tcpBefore = partner.server.stats.connections;
		// The four functions run side by side, each one invocation at a time, as four Lambda instances would.
		await Promise.all([ordersBurst(fns, burst), ledgerBurst(fns, burst), relayBurst(fns, burst)]);

		// Every process is frozen now. Whatever the functions left open stays open until they are thawed: this is
		// the moment a leak would show.
		record.leakChecks.total++;
		const appConnections = await admin.settleConnections(db.user, 0, 1000);
		const readerConnections = await admin.connectionsOf(readerDb.user);
		const leak = appConnections !== 0 || readerConnections > READER_POOL_LIMIT;
		if (leak) {
			violation(
				`while frozen: ${appConnections} connections of the app user (expected 0), ${readerConnections} of the reader (pool limit ${READER_POOL_LIMIT})`,
			);
		} else record.leakChecks.passed++;

		const label =
			burst === 0
				? "cold start"
				: `after ${(freeze / 1000).toFixed(2)} s frozen${freeze > PARTNER_KEEP_ALIVE_MS ? " (> keep-alive)" : ""}`;
		const count = record.samples.length - invocationsBefore;
		const newTcp = partner.server.stats.connections - tcpBefore;
		const status = record.violations.length === violationsBefore ? "✓" : "✗";
		say(
			`burst ${burst + 1}/${BURSTS} ${label.padEnd(35)} ${String(count).padStart(3)} invocations ${status}  ` +
				`DB while frozen: app ${appConnections}, reader pool ${readerConnections}  new partner connections: ${newTcp}`,
		);
	}

	// The last redeliveries, as SQS would send them after the visibility timeout.
	if (redeliveries.length > 0) {
		const outcome = await invoke<SQSBatchResponse>(fns.relay, sqsEvent(redeliveries));
		if ((outcome.result?.batchItemFailures.length ?? 1) !== 0)
			violation("the last redelivered events failed again");
		redeliveries = [];
	}

	// Lambda reclaims the environments: the reader's warm pool goes with its process.
	const stats = environments.map((environment) => ({ name: environment.functionName, ...environment.stats }));
	await Promise.all(environments.map((environment) => environment.kill()));
	const connectionsOpened = (await admin.connectionsTotal()) - connectionsBefore;
	const appAfter = await admin.settleConnections(db.user, 0, 2000);
	const readerAfter = await admin.settleConnections(readerDb.user, 0, 2000);
	if (appAfter !== 0 || readerAfter !== 0) {
		violation(
			`after the environments ended: ${appAfter} app and ${readerAfter} reader connections still open`,
		);
	}

	// Deliveries, as the partner counted them.
	const webhooks = partner.accepted(ORDERS_WEBHOOK_PATH);
	const webhooksDelivered = record.ordersCreated.filter((id) => webhooks.get(`order-${id}`) === 1).length;
	const webhookDuplicates = [...webhooks.values()].filter((count) => count > 1).length;
	if (webhooksDelivered !== record.ordersCreated.length || webhookDuplicates > 0) {
		violation(
			`order webhooks: ${webhooksDelivered}/${record.ordersCreated.length} delivered once, ${webhookDuplicates} duplicated`,
		);
	}
	const events = partner.accepted(RELAY_EVENTS_PATH);
	const eventsDelivered = [...record.relay.sent].filter((id) => events.get(id) === 1).length;
	const eventDuplicates = [...events.values()].filter((count) => count > 1).length;
	if (eventsDelivered !== record.relay.sent.size || eventDuplicates > 0) {
		violation(
			`relayed events: ${eventsDelivered}/${record.relay.sent.size} delivered once, ${eventDuplicates} duplicated`,
		);
	}

	const http = partner.server.stats;
	const cold = record.samples.filter((sample) => sample.cold).map((sample) => sample.latencyMs);
	const warm = record.samples.filter((sample) => !sample.cold).map((sample) => sample.latencyMs);
	const crashes = stats.reduce((sum, s) => sum + s.crashes + s.timeouts, 0);
	const ok = record.violations.length === 0;

	console.log("");
	console.log("Report");
	const row = (label: string, value: string, held?: boolean) =>
		console.log(`  ${held === undefined ? " " : held ? "✓" : "✗"} ${label.padEnd(24)} ${value}`);
	row(
		"invocations",
		`${record.samples.length} in ${stats.length} environments (${stats.map((s) => `${s.name} ${s.invocations}`).join(", ")}); ` +
			`${record.expectedErrors} answered errors on purpose (bad orders, unknown accounts), ${crashes} crashes or timeouts`,
		crashes === 0,
	);
	row(
		"DB connections",
		`${connectionsOpened} opened and ${connectionsOpened - appAfter - readerAfter} closed (the server's Connections counter); ` +
			`app user back to 0 while frozen after ${record.leakChecks.passed}/${record.leakChecks.total} bursts, reader pool ≤ ${READER_POOL_LIMIT}`,
		record.leakChecks.passed === record.leakChecks.total && appAfter === 0 && readerAfter === 0,
	);
	row(
		"HTTP connections",
		`${http.requests} requests over ${http.connections} TCP connections (${http.requests - http.connections} reused, ${http.tlsHandshakes} TLS handshakes), ` +
			`counted by the partner; it closed ${record.closedWhileFrozen} idle ones while their functions were frozen (${record.longFreezes} freezes > ${PARTNER_KEEP_ALIVE_MS / 1000} s), and no request failed for it`,
	);
	row(
		"background tasks",
		`${webhooksDelivered}/${record.ordersCreated.length} order webhooks delivered before their invocation returned, ${webhookDuplicates} duplicates`,
		webhooksDelivered === record.ordersCreated.length && webhookDuplicates === 0,
	);
	row(
		"relayed events",
		`${eventsDelivered}/${record.relay.sent.size} delivered exactly once; ${record.relay.reportedFailures} batch item failures reported for ${record.relay.expectedFailures} refusals, all redelivered`,
		eventsDelivered === record.relay.sent.size && eventDuplicates === 0,
	);
	row(
		"read after write",
		`${record.ledgerReads.fresh}/${record.ledgerReads.total} ledger reads fresh (another function, warm pool), ${record.orderReads.fresh}/${record.orderReads.total} orders read back`,
		record.ledgerReads.fresh === record.ledgerReads.total &&
			record.orderReads.fresh === record.orderReads.total,
	);
	row(
		"latency",
		`cold p50 ${ms(percentile(cold, 50))} p99 ${ms(percentile(cold, 99))} (${cold.length}) · warm p50 ${ms(percentile(warm, 50))} p99 ${ms(percentile(warm, 99))} (${warm.length}), thaw and IPC included`,
	);
	console.log("");
	console.log(
		ok
			? `every invariant held: no leaked connection, every background task delivered, every read after a write fresh (${seconds().trim()} s)`
			: `${record.violations.length} invariant(s) failed:\n${record.violations.map((v) => `  - ${v}`).join("\n")}`,
	);
	return ok ? 0 : 1;
};

// Exits with main's code once everything is closed: a stray timer somewhere (a driver's, a harness's) must not
// keep the demo waiting.
await runScript("demo", main);
