// Type test (checked by `tsc -p tsconfig.json --noEmit`, never run): @middy/http-router with both middlewares.
//
// Routes are handlers written before any `.use()`, so their context is annotated. @middy/http-router hands each
// route the context it was called with (the one the middlewares decorated), but its `Route` type only accepts
// handlers of Lambda's plain `Context`: a route annotated `MysqlContext & HttpPoolContext` does not
// compile as a `Route` (strict function types). The idiom below is the smallest honest one: routes are checked
// against the app's context, one cast at the router, and `.handler()` checks that the chain provides that context.
import middy from "@middy/core";
import httpRouterHandler, { type Route } from "@middy/http-router";
import { type HttpPoolContext, httpPool } from "@middy-conn/http-pool";
import { type MysqlContext, mysqlConnection } from "@middy-conn/mysql";
import type { APIGatewayProxyEventV2, APIGatewayProxyResultV2, Context } from "aws-lambda";
import type { RowDataPacket } from "mysql2";

type Event = APIGatewayProxyEventV2;
type Result = APIGatewayProxyResultV2;

// The idiom, as the packages' READMEs show it. MysqlContext and HttpPoolContext include Lambda's Context.
type AppContext = MysqlContext & HttpPoolContext;
type AppRoute = Omit<Route<Event, Result>, "handler"> & {
	handler: (event: Event, context: AppContext) => Promise<Result>;
};
const appRouter = (routes: AppRoute[]) =>
	httpRouterHandler(routes as unknown as Route<Event, Result>[]) as unknown as AppRoute["handler"];

const routes: AppRoute[] = [
	{
		method: "GET",
		path: "/orders/{id}",
		handler: async (event, context) => {
			const [rows] = await context.db.query<RowDataPacket[]>("SELECT * FROM orders WHERE id = ?", [
				event.pathParameters?.id,
			]);
			return { statusCode: rows.length ? 200 : 404, body: JSON.stringify(rows[0] ?? {}) };
		},
	},
	{
		method: "POST",
		path: "/orders",
		handler: async (_event, context) => {
			context.waitUntil(context.http.request({ path: "/webhooks/orders", method: "POST", body: "{}" }));
			return { statusCode: 202 };
		},
	},
];

const origin = "https://partner.example.com";
const config = { host: "db.example.com", user: "app", database: "orders" };

export const handler = middy<Event, Result>()
	.use(httpPool({ origin }))
	.use(mysqlConnection({ config }))
	.handler(appRouter(routes));

// The naive form does not compile: a route annotated with the app's context is not a `Route`.
const getOrder = async (_event: Event, context: AppContext): Promise<Result> => {
	await context.db.query("SELECT 1");
	return { statusCode: 200 };
};
export const naive: Route<Event, Result> = {
	method: "GET",
	path: "/",
	// @ts-expect-error Route's handler takes Lambda's Context, which has no `db` nor `http`
	handler: getOrder,
};

// Misuse fails.
export const misuse: AppRoute[] = [
	{
		method: "GET",
		path: "/typo",
		handler: async (_event, context) => {
			// @ts-expect-error no `qeury` on the connection
			await context.db.qeury("SELECT 1");
			return { statusCode: 200 };
		},
	},
	{
		method: "GET",
		path: "/http-as-number",
		handler: async (_event, context) => {
			// @ts-expect-error context.http is a dispatcher, not a number
			const port: number = context.http;
			return { statusCode: port };
		},
	},
	{
		method: "GET",
		path: "/claims",
		// @ts-expect-error a route that claims a context the chain does not give (context.http as a number)
		handler: async (_event, _context: Context & { http: number }) => ({ statusCode: 200 }),
	},
];

// A chain without mysqlConnection does not provide `context.db`: `.handler()` rejects the router.
export const withoutMysql = middy<Event, Result>()
	.use(httpPool({ origin }))
	// @ts-expect-error the routes need context.db, which only mysqlConnection() provides
	.handler(appRouter(routes));
