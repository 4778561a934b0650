// The cold-start subject when examples/orders-api/handler.ts does not exist: a handler shaped like the README's,
// with both middlewares configured at module scope, as a deployed function would be. Bundled by cold-start.ts.
import middy from "@middy/core";
import { httpPool } from "@middy-conn/http-pool";
import { mysqlConnection } from "@middy-conn/mysql";

export const handler = middy<{ id: number }>()
	.use(httpPool({ origin: process.env.API_ORIGIN ?? "https://127.0.0.1:8443", connections: 4 }))
	.use(
		mysqlConnection({
			config: {
				host: process.env.DB_HOST ?? "127.0.0.1",
				user: process.env.DB_USER ?? "app",
				password: process.env.DB_PASSWORD ?? "",
				database: process.env.DB_NAME ?? "app",
			},
		}),
	)
	.handler(async (event: { id: number }, context) => {
		const [rows] = await context.db.query("SELECT * FROM orders WHERE id = ?", [event.id]);
		context.waitUntil(
			context.http
				.request({ path: "/v1/audit", method: "POST", body: JSON.stringify(rows) })
				.then((response) => response.body.dump()),
		);
		return rows;
	});
