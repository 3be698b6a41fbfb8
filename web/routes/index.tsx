import { HealthCheck } from "../islands/HealthCheck.tsx";
import { Island } from "../components/Island.tsx";
import { Layout } from "../components/Layout.tsx";

/** The console's first page: what this wharf is running, with a live health check island. */
export function OverviewPage({ islandsSrc, startedAt }: { islandsSrc: string; startedAt: Date }) {
  return (
    <Layout title="Overview" islandsSrc={islandsSrc}>
      <h1>Overview</h1>
      <section class="card">
        <h2>Web</h2>
        <p class="muted">
          Serving since <time dateTime={startedAt.toISOString()}>{startedAt.toISOString()}</time>.
        </p>
        <Island component={HealthCheck} props={{ url: "/healthz" }} />
      </section>
    </Layout>
  );
}
