// Events that are not what orders-api expects get a 4xx whose JSON body says what is wrong: never a 500, never a
// stack trace. None of them touches the database or the partner: both are closed ports here, so reaching either
// would be a 500.
import { freePort, httpApiEvent, invokeInProcess, sqsEvent } from "@middy-conn/test-harness";
import type { APIGatewayProxyStructuredResultV2 } from "aws-lambda";
import { beforeAll, describe, expect, it } from "vitest";

let handler: unknown;

beforeAll(async () => {
	const closed = await freePort();
	Object.assign(process.env, {
		DB_HOST: "127.0.0.1",
		DB_PORT: String(closed),
		DB_USER: "orders_app",
		DB_PASSWORD: "not-used",
		DB_NAME: "orders",
		WEBHOOK_ORIGIN: `https://127.0.0.1:${closed}`,
		// The stats lines (JSON, one per middleware per invocation) are checked by bundle.test.ts; not printed here.
		POWERTOOLS_LOG_LEVEL: "WARN",
	});
	({ handler } = await import("../handler.ts"));
});

const post = (body: unknown, headers?: Record<string, string>) =>
	httpApiEvent({
		method: "POST",
		path: "/orders",
		routeKey: "POST /orders",
		body,
		...(headers ? { headers } : {}),
	});

const get = (pathParameters?: Record<string, string>) =>
	httpApiEvent({
		method: "GET",
		path: `/orders/${pathParameters?.id ?? ""}`,
		routeKey: "GET /orders/{id}",
		...(pathParameters ? { pathParameters } : {}),
	});

const wrongPayload = /expected an API Gateway HTTP API event, payload format 2\.0/;

describe("orders-api: events it does not expect", () => {
	it.each<[string, unknown, number, RegExp]>([
		[
			"a REST API (payload format 1.0) event",
			{ version: "1.0", resource: "/orders", path: "/orders", httpMethod: "POST", headers: {}, body: "{}" },
			400,
			wrongPayload,
		],
		["an empty event", {}, 400, wrongPayload],
		["an SQS event", sqsEvent([{ body: { customerId: "c" } }]), 400, wrongPayload],
		[
			"a route it does not serve",
			httpApiEvent({ method: "DELETE", path: "/orders/1", routeKey: "DELETE /orders/{id}" }),
			404,
			/no route for DELETE \/orders\/\{id\}/,
		],
		["a POST without a body", post(undefined), 400, /send the order as a JSON object/],
		["a JSON null body", post("null", { "content-type": "application/json" }), 400, /must be a JSON object/],
		[
			"lines that are not an array",
			post({ customerId: "c-1", currency: "EUR", lines: "TEA x2" }),
			400,
			/lines must be an array/,
		],
		[
			"a customer id longer than the column",
			post({
				customerId: "c".repeat(65),
				currency: "EUR",
				lines: [{ sku: "A", quantity: 1, unitPriceCents: 1 }],
			}),
			400,
			/customerId must be a non-empty string of at most 64 characters/,
		],
		[
			"a line that is not an object",
			post({ customerId: "c-1", currency: "EUR", lines: [null] }),
			400,
			/lines\[0\]\.sku must be/,
		],
		[
			"a quantity given as a string",
			post({ customerId: "c-1", currency: "EUR", lines: [{ sku: "A", quantity: "2", unitPriceCents: 1 }] }),
			400,
			/lines\[0\]\.quantity must be an integer/,
		],
		["a GET without its id", get(), 400, /the order id must be a positive integer/],
		["an order id of 0", get({ id: "0" }), 400, /the order id must be a positive integer/],
		[
			"an order id beyond BIGINT",
			get({ id: "9".repeat(20) }),
			400,
			/the order id must be a positive integer/,
		],
		["an id with SQL in it", get({ id: "1 OR 1=1" }), 400, /the order id must be a positive integer/],
	])("%s: %i with a clear message", async (_case, event, status, message) => {
		const response = await invokeInProcess<APIGatewayProxyStructuredResultV2>(handler, event);
		expect(response.statusCode).toBe(status);
		expect(JSON.parse(String(response.body)).message).toMatch(message);
		expect(response.body).not.toMatch(/\n\s+at |Error:/);
	});

	it("a body that is base64-encoded malformed JSON: 400, with a JSON message", async () => {
		const event = {
			...post(Buffer.from('{"customerId":').toString("base64"), { "content-type": "application/json" }),
			isBase64Encoded: true,
		};
		const response = await invokeInProcess<APIGatewayProxyStructuredResultV2>(handler, event);
		expect(response.statusCode).toBe(400);
		expect(JSON.parse(String(response.body))).toEqual({ message: "the body is not valid JSON" });
	});
});
