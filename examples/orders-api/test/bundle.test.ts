// The deployable artifact: handler.ts bundled by esbuild into one ES module (as `sam build` does), run in its own
// Node process as Lambda runs it, against the real database and a partner over HTTPS.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { applySqlFile, httpApiEvent } from "@middy-conn/test-harness";
import { useFunctionBundle, useHttpServer, useTestDatabase } from "@middy-conn/test-harness/test-fixtures";
import type { APIGatewayProxyStructuredResultV2 } from "aws-lambda";
import { beforeAll, describe, expect, it, vi } from "vitest";

const example = fileURLToPath(new URL("..", import.meta.url));

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
// After the database's and the partner's fixtures: the function's process ends before they close.
const orders = useFunctionBundle(join(example, "handler.ts"));

beforeAll(() => {
	writeFileSync(join(orders.work, "partner-ca.pem"), partner.ca ?? "");
});

describe("orders-api bundle", () => {
	it("is one ES module with mysql2 and undici inside, that serves POST and GET in a Lambda-like process", async () => {
		const bundle = await orders.bundle();
		expect(bundle.bytes).toBeGreaterThan(0);
		expect(Object.keys(bundle.bytesByPackage)).toEqual(expect.arrayContaining(["mysql2", "undici"]));

		const environment = await orders.start({
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
				NODE_EXTRA_CA_CERTS: join(orders.work, "partner-ca.pem"),
				POWERTOOLS_SERVICE_NAME: "orders-api",
				POWERTOOLS_LOG_LEVEL: "INFO",
				// Lambda sets it; Powertools reads it for `cold_start` (without it, every line says false).
				AWS_LAMBDA_INITIALIZATION_TYPE: "on-demand",
			},
		});
		const requestId = "c0ffee00-0000-4000-8000-000000000001";
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
			{ requestId },
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
		// Powertools Logger, given to both middlewares with logStats: each printed one JSON stats line for the POST,
		// with the invocation's request id (added by injectLambdaContext) and the service name.
		const statsLine = (pkg: string) =>
			environment
				.logs()
				.filter((line) => line.startsWith("{"))
				.map((line) => JSON.parse(line) as Record<string, unknown>)
				.find(
					(entry) => entry.message === `${pkg}: invocation stats` && entry.function_request_id === requestId,
				);
		for (const pkg of ["@middy-conn/http-pool", "@middy-conn/mysql"]) {
			await vi.waitFor(() => expect(statsLine(pkg)).toBeDefined());
			expect(statsLine(pkg)).toMatchObject({
				level: "INFO",
				service: "orders-api",
				function_name: "orders-api",
				cold_start: true,
			});
		}

		// The process is frozen now, as Lambda leaves it: no connection of the function's user is open.
		expect(await admin.settleConnections(db.user, 0)).toBe(0);
	});
});
