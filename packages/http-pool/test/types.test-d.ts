// Type tests, checked by the root `tsc -p tsconfig.json --noEmit` (never run). Each `@ts-expect-error` line
// must fail to compile: a misuse that type-checks would make the directive itself an error.
import middy from "@middy/core";
import { type Dispatcher, fetch, request } from "undici";
import { expectTypeOf } from "vitest";
import {
	type HttpPoolContext,
	type HttpPoolMiddleware,
	type HttpPoolStats,
	httpPool,
	type WaitUntil,
} from "../src/index.ts";

// middy().use(httpPool()).handler(): context.http and context.waitUntil are typed, with no casts.
export const inferred = middy()
	.use(httpPool({ origin: "https://api.example.com", connections: 4 }))
	.handler(async (_event, context) => {
		expectTypeOf(context.http).toExtend<Dispatcher>();
		expectTypeOf(context.waitUntil).toEqualTypeOf<WaitUntil>();
		expectTypeOf(context.awsRequestId).toBeString();
		const { statusCode, body } = await context.http.request({ path: "/v1/items", method: "GET" });
		const items = await body.json();
		context.waitUntil(
			context.http
				.request({ path: "/v1/audit", method: "POST", body: JSON.stringify(items) })
				.then((response) => response.body.dump()),
		);
		context.waitUntil(async (signal) => {
			expectTypeOf(signal).toEqualTypeOf<AbortSignal>();
		});
		// undici's own functions take it as their dispatcher
		await request("https://api.example.com/v1/items", { dispatcher: context.http });
		await fetch("https://api.example.com/v1/items", { dispatcher: context.http });
		expectTypeOf(context.http.invocationStats).toEqualTypeOf<HttpPoolStats>();
		expectTypeOf(context.http.invocationStats.connectionsOpened).toBeNumber();
		// @ts-expect-error waitUntil takes a promise or a function, not a string
		context.waitUntil("audit");
		// @ts-expect-error a request's path is a string
		await context.http.request({ path: 42, method: "GET" });
		return { statusCode };
	});

// A handler written on its own takes an HttpPoolContext (the Lambda context included), and is given to .handler()
// after .use(): .handler() checks that the chain provides what the handler needs.
const listItems = async (_event: unknown, context: HttpPoolContext) => {
	expectTypeOf(context.awsRequestId).toBeString();
	const { body } = await context.http.request({ path: "/", method: "GET" });
	return body.text();
};
export const checked = middy().use(httpPool()).handler(listItems);
// @ts-expect-error the chain has no httpPool(): nothing provides context.http
export const checkedWithout = middy().handler(listItems);

// middy(handler).use(...) runs the same, but TypeScript cannot check it: Middy's types give middy(handler) the
// handler's own context before any .use(), so this compiles without the middleware (and fails at run time).
// The READMEs teach the checked form above for that reason.
export const unchecked = middy(listItems);

// Without the middleware there is no context.http.
export const without = middy().handler(async (_event, context) => {
	// @ts-expect-error http is not on a plain Lambda context
	return context.http;
});

expectTypeOf(httpPool()).toExtend<HttpPoolMiddleware>();
expectTypeOf(httpPool().dispatcher).toEqualTypeOf<Dispatcher>();

// Options are typed as well as validated at runtime.
// @ts-expect-error an unknown option
httpPool({ conections: 4 });
// @ts-expect-error connections is a number
httpPool({ connections: "4" });
// @ts-expect-error retry is an object or false
httpPool({ retry: true });
// @ts-expect-error the logger needs info, warn and error
httpPool({ logger: { log: () => {} } });
httpPool({
	retry: false,
	logger: false,
	connect: { ca: "-----BEGIN CERTIFICATE-----", rejectUnauthorized: true },
});
httpPool({ onStats: (stats, req) => void [stats.requests, req.context.awsRequestId] });

// contextKey is typed: the dispatcher is where the option says, and nowhere else.
export const underItsKey = middy()
	.use(httpPool({ origin: "https://partner.example.com", contextKey: "partner" }))
	.use(httpPool({ origin: "https://api.example.com" }))
	.handler(async (_event, context) => {
		expectTypeOf(context.partner).toExtend<Dispatcher>();
		expectTypeOf(context.http).toExtend<Dispatcher>();
		// @ts-expect-error no middleware put a dispatcher under "other"
		context.other.request({ path: "/", method: "GET" });
		// @ts-expect-error the dispatcher is not a number (context is typed, never any)
		const wrong: number = context.partner;
		return wrong;
	});

// A handler written on its own names the key in its annotation; .handler() checks it against the chain's key.
const callPartner = async (_event: unknown, context: HttpPoolContext<"partner">) => {
	const { body } = await context.partner.request({ path: "/", method: "GET" });
	return body.text();
};
export const annotatedKey = middy()
	.use(httpPool({ origin: "https://partner.example.com", contextKey: "partner" }))
	.handler(callPartner);
export const annotatedKeyWrong = middy()
	.use(httpPool({ origin: "https://partner.example.com", contextKey: "other" }))
	// @ts-expect-error the handler needs context.partner; the chain puts the dispatcher under "other"
	.handler(callPartner);
