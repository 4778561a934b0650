// The deployable artifact: handler.ts bundled by esbuild into one ES module (as `sam build` does), run in its own
// Node process as Lambda runs it, relaying to a partner over HTTPS.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
	bundleHandler,
	describeBundle,
	type ExecutionEnvironment,
	sqsEvent,
	startExecutionEnvironment,
} from "@middy-conn/test-harness";
import { useHttpServer } from "@middy-conn/test-harness/test-fixtures";
import type { SQSBatchResponse } from "aws-lambda";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const example = fileURLToPath(new URL("..", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "middy-conn-webhook-relay-"));

const partner = useHttpServer({
	tls: true,
	routes: {
		"/v1/events": (_request, response, received) => {
			response.writeHead(received.body.includes('"refuse":true') ? 503 : 202).end();
		},
	},
	resetStats: false,
});
let environment: ExecutionEnvironment;

beforeAll(() => {
	writeFileSync(join(work, "partner-ca.pem"), partner.ca ?? "");
});

// Runs before the fixture's afterAll (registered later): the function's process ends first.
afterAll(async () => {
	await environment?.kill();
	rmSync(work, { recursive: true, force: true });
});

describe("webhook-relay bundle", () => {
	it("relays batches over HTTPS from a Lambda-like process, reusing its connections while warm", async () => {
		const bundle = await bundleHandler({
			entry: join(example, "handler.ts"),
			outfile: join(work, "handler.mjs"),
		});
		console.log(`bundle size: ${describeBundle(bundle)}`);
		expect(bundle.bytes).toBeGreaterThan(0);
		expect(Object.keys(bundle.bytesByPackage)).toContain("undici");

		environment = await startExecutionEnvironment({
			module: bundle.outfile,
			functionName: "webhook-relay",
			env: {
				PARTNER_ORIGIN: partner.origin,
				RELAY_CONCURRENCY: "2",
				NODE_EXTRA_CA_CERTS: join(work, "partner-ca.pem"),
			},
		});
		const first = await environment.invoke<SQSBatchResponse>(
			sqsEvent([
				{ messageId: "m1", body: { n: 1 } },
				{ messageId: "m2", body: { refuse: true } },
				{ messageId: "m3", body: { n: 3 } },
			]),
		);
		expect(first).toMatchObject({
			ok: true,
			cold: true,
			result: { batchItemFailures: [{ itemIdentifier: "m2" }] },
		});
		const second = await environment.invoke<SQSBatchResponse>(
			sqsEvent([{ body: { n: 4 } }, { body: { n: 5 } }]),
		);
		expect(second).toMatchObject({ ok: true, cold: false, result: { batchItemFailures: [] } });
		expect(partner.receivedCount("POST", "/v1/events")).toBe(5);
		// Two connections at most (RELAY_CONCURRENCY), each with one TLS handshake, shared by both batches.
		expect(partner.stats.tlsHandshakes).toBeLessThanOrEqual(2);
	});
});
