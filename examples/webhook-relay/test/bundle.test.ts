// The deployable artifact: handler.ts bundled by esbuild into one ES module (as `sam build` does), run in its own
// Node process as Lambda runs it, relaying to a partner over HTTPS.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { sqsEvent } from "@middy-conn/test-harness";
import { useFunctionBundle, useHttpServer } from "@middy-conn/test-harness/test-fixtures";
import type { SQSBatchResponse } from "aws-lambda";
import { beforeAll, describe, expect, it } from "vitest";

const partner = useHttpServer({
	tls: true,
	routes: {
		"/v1/events": (_request, response, received) => {
			response.writeHead(received.body.includes('"refuse":true') ? 503 : 202).end();
		},
	},
	resetStats: false,
});
// After the partner's fixture: the function's process ends before the partner closes.
const relay = useFunctionBundle(fileURLToPath(new URL("../handler.ts", import.meta.url)));

beforeAll(() => {
	writeFileSync(join(relay.work, "partner-ca.pem"), partner.ca ?? "");
});

describe("webhook-relay bundle", () => {
	it("relays batches over HTTPS from a Lambda-like process, reusing its connections while warm", async () => {
		const bundle = await relay.bundle();
		expect(bundle.bytes).toBeGreaterThan(0);
		expect(Object.keys(bundle.bytesByPackage)).toContain("undici");

		const environment = await relay.start({
			module: bundle.outfile,
			functionName: "webhook-relay",
			env: {
				PARTNER_ORIGIN: partner.origin,
				RELAY_CONCURRENCY: "2",
				NODE_EXTRA_CA_CERTS: join(relay.work, "partner-ca.pem"),
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
