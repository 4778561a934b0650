import middy from "@middy/core";
import { useHttpServer, usePoolCleanup } from "@middy-conn/test-harness/test-fixtures";
import { describe, expect, it } from "vitest";
import { closeHttpPools, type HttpPoolOptions, httpPool } from "../src/index.ts";
import { asLambda, type HttpContext, lambdaContext } from "./helpers.ts";

const server = useHttpServer({ tls: true });
usePoolCleanup(closeHttpPools);

const getJson = (options: HttpPoolOptions) =>
	asLambda(
		middy(async (_event: unknown, context: HttpContext) => {
			const { body } = await context.http.request({ path: "/json", method: "GET" });
			return body.json();
		}).use(httpPool({ origin: server.origin, logger: false, ...options })),
	);

describe("TLS", () => {
	it("refuses a certificate it cannot verify", async () => {
		await expect(getJson({})({}, lambdaContext())).rejects.toMatchObject({
			code: expect.stringMatching(/SELF_SIGNED|UNABLE_TO_VERIFY/),
		});
		expect(server.receivedCount()).toBe(0);
	});

	it("trusts it when its CA is given in connect.ca, and reuses the TLS session's connection", async () => {
		const handler = getJson({ connect: { ca: server.ca } });
		for (let i = 0; i < 5; i++) expect(await handler({}, lambdaContext())).toMatchObject({ ok: true });
		expect(server.stats.tlsHandshakes).toBe(1);
	});

	it("connects when verification is explicitly switched off (and warns about it)", async () => {
		const handler = getJson({ connect: { rejectUnauthorized: false } });
		expect(await handler({}, lambdaContext())).toMatchObject({ ok: true });
	});
});
