// The deployable artifact: handler.ts bundled by esbuild into one ES module (as `sam build` does), run in its own
// Node process as Lambda runs it, against the real database and a partner over HTTPS.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
	applySqlFile,
	bundleHandler,
	describeBundle,
	type ExecutionEnvironment,
	httpApiEvent,
	startExecutionEnvironment,
} from "@middy-conn/test-harness";
import { useHttpServer, useTestDatabase } from "@middy-conn/test-harness/test-fixtures";
import type { APIGatewayProxyStructuredResultV2 } from "aws-lambda";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const example = fileURLToPath(new URL("..", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "middy-conn-orders-api-"));

const { admin, db } = useTestDatabase("orders_bundle", {
	seed: (_admin, db) => applySqlFile(db, join(example, "schema.sql")),
});
const partner = useHttpServer({
	tls: true,
	routes: {
		"/webhooks/orders": (_request, response) => {
			response.writeHead(202).end();
		},
	},
	resetStats: false,
});
let environment: ExecutionEnvironment;

beforeAll(() => {
	writeFileSync(join(work, "partner-ca.pem"), partner.ca ?? "");
});

// Runs before the fixtures' afterAll (registered later): the function's process ends first.
afterAll(async () => {
	await environment?.kill();
	rmSync(work, { recursive: true, force: true });
});

describe("orders-api bundle", () => {
	it("is one ES module with mysql2 and undici inside, that serves POST and GET in a Lambda-like process", async () => {
		const bundle = await bundleHandler({
			entry: join(example, "handler.ts"),
			outfile: join(work, "handler.mjs"),
		});
		console.log(`bundle size: ${describeBundle(bundle)}`);
		expect(bundle.bytes).toBeGreaterThan(0);
		expect(Object.keys(bundle.bytesByPackage)).toEqual(expect.arrayContaining(["mysql2", "undici"]));

		environment = await startExecutionEnvironment({
			module: bundle.outfile,
			functionName: "orders-api",
			env: {
				DB_HOST: db.host,
				DB_PORT: String(db.port),
				DB_USER: db.user,
				DB_PASSWORD: db.password,
				DB_NAME: db.database,
				WEBHOOK_ORIGIN: partner.origin,
				// How a Lambda function trusts a private CA: Node reads it at startup.
				NODE_EXTRA_CA_CERTS: join(work, "partner-ca.pem"),
			},
		});
		const created = await environment.invoke<APIGatewayProxyStructuredResultV2>(
			httpApiEvent({
				method: "POST",
				path: "/orders",
				routeKey: "POST /orders",
				body: {
					customerId: "bundle",
					currency: "EUR",
					lines: [{ sku: "A", quantity: 3, unitPriceCents: 10 }],
				},
			}),
		);
		expect(created).toMatchObject({ ok: true, cold: true, result: { statusCode: 201 } });
		const id = JSON.parse(created.result?.body ?? "{}").id;
		expect(partner.receivedCount("POST", "/webhooks/orders")).toBe(1);

		const read = await environment.invoke<APIGatewayProxyStructuredResultV2>(
			httpApiEvent({
				method: "GET",
				path: `/orders/${id}`,
				routeKey: "GET /orders/{id}",
				pathParameters: { id },
			}),
		);
		expect(read).toMatchObject({ ok: true, cold: false, result: { statusCode: 200 } });
		expect(JSON.parse(read.result?.body ?? "{}")).toMatchObject({
			id,
			totalCents: 30,
			lines: [{ sku: "A" }],
		});
		// The process is frozen now, as Lambda leaves it: no connection of the function's user is open.
		expect(await admin.settleConnections(db.user, 0)).toBe(0);
	});
});
