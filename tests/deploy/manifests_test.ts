/**
 * The deployment files are valid for their tools, shaped the way each process must run, keep every
 * credential in a Secret (or out of committed files), and give every process every variable its source
 * reads. Processes whose source is not in this tree yet are checked for their manifests only.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  composeCredentialProblems,
  composeEnvironment,
  composeRequiredVariables,
  composeServicesOf,
  configMapCredentials,
  coverage,
  DEPLOY,
  hasLiteralPassword,
  isCredentialName,
  k8sContainers,
  k8sContainersOf,
  type K8sDoc,
  k8sProvided,
  loadCompose,
  loadK8s,
  loadUnits,
  missingVariables,
  parseEnvFile,
  unitOf,
  unitProvided,
  unknownK8sFields,
  validateCompose,
  validateK8sDoc,
} from "../../deploy/manifests.ts";
import { binaryName, PROCESSES, processNamed } from "../../deploy/processes.ts";
import { patroniConfig } from "../../workers/discovery/patroni_config.ts";

const docs = await loadK8s();
const containers = k8sContainers(docs);
const compose = await loadCompose();
const units = await loadUnits();

// deno-lint-ignore no-explicit-any
function doc(kind: string, name: string): any {
  const d = docs.find((x) => x.doc.kind === kind && x.doc.metadata?.name === name);
  assert.ok(d, `deploy/k8s has no ${kind} ${name}`);
  return d.doc;
}

// deno-lint-ignore no-explicit-any
function podLabels(workload: any): Record<string, string> {
  return workload.spec.template.metadata.labels;
}

function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

Deno.test("every Kubernetes manifest parses and validates against the Kubernetes API schema", () => {
  assert.ok(docs.length >= 20, `expected the full set of manifests, found ${docs.length} documents`);
  const problems = docs.flatMap(({ file, doc }) =>
    validateK8sDoc(doc).map((p) => `${file} ${doc.kind}/${doc.metadata?.name}: ${p}`)
  );
  assert.deepEqual(problems, []);
  for (const { file, doc } of docs) {
    if (doc.kind !== "Namespace") {
      assert.equal(doc.metadata.namespace, "wharf", `${file} ${doc.kind} namespace`);
    }
  }
});

Deno.test("the Kubernetes validation rejects a wrong type, a missing required field and an unknown kind", () => {
  const deployment = structuredClone(doc("Deployment", "wharf-dispatch"));
  deployment.spec.replicas = "3";
  assert.match(validateK8sDoc(deployment).join(), /replicas must be integer/);
  const service = structuredClone(doc("Service", "wharf-web"));
  delete service.spec.ports[0].port;
  assert.match(validateK8sDoc(service).join(), /port/);
  assert.match(validateK8sDoc({ apiVersion: "v1", kind: "Pdo" }).join(), /unknown apiVersion\/kind/);
});

Deno.test("every field in the manifests is one the Kubernetes API defines, and a misspelt one is named", async () => {
  // One type-check run for all: the real documents plus a planted typo that must be the only finding.
  const planted = structuredClone(docs.find((d) => d.doc.kind === "Deployment")!);
  planted.file = "planted.yaml";
  planted.doc.spec.template.spec.containers[0].livenessprobe =
    planted.doc.spec.template.spec.containers[0].livenessProbe;
  const problems = await unknownK8sFields([...docs, planted]);
  assert.equal(problems.length, 1, problems.join("\n"));
  assert.match(
    problems[0],
    /^planted\.yaml Deployment\/\S+: .*'"livenessprobe"' does not exist in type 'IContainer'/,
  );
});

Deno.test("kustomization.yaml applies every manifest except the example Secrets", async () => {
  const { parse } = await import("yaml");
  const k = parse(await Deno.readTextFile(join(DEPLOY, "k8s", "kustomization.yaml")));
  const files = [...new Set(docs.map((d) => d.file))].filter((f) => f !== "secrets.example.yaml").sort();
  assert.deepEqual([...k.resources].sort(), files);
  assert.deepEqual(k.images.map((i: { name: string }) => i.name).sort(), ["wharf", "wharf-postgres"]);
});

Deno.test("hydrate runs as a sidecar in Redis's Pod and reaches Redis on the loopback", () => {
  const [hydrate] = k8sContainersOf(processNamed("hydrate"), containers);
  assert.ok(hydrate, "no hydrate container");
  const names = hydrate.podSpec.containers.map((c: { name: string }) => c.name);
  assert.ok(names.includes("redis"), `hydrate's Pod has ${names.join(", ")}, no redis`);
  const redisUrl = hydrate.container.env.find((e: { name: string }) => e.name === "REDIS_URL");
  const secret = doc("Secret", redisUrl.valueFrom.secretKeyRef.name);
  assert.match(secret.stringData[redisUrl.valueFrom.secretKeyRef.key], /@127\.0\.0\.1:6379\b/);
  assert.ok(hydrate.container.env.some((e: { name: string }) => e.name === "pcred"), "merflow's pcred");
});

Deno.test("dispatch runs several replicas, replicate one with the Recreate strategy", () => {
  assert.ok(doc("Deployment", "wharf-dispatch").spec.replicas >= 2);
  const replicate = k8sContainersOf(processNamed("replicate"), containers);
  assert.ok(replicate.length >= 1);
  for (const c of replicate) {
    const w = doc("Deployment", c.workload.split("/")[1]);
    assert.equal(w.spec.replicas, 1, `${c.workload} replicas`);
    assert.equal(w.spec.strategy.type, "Recreate", `${c.workload} strategy`);
  }
});

Deno.test("web and imgproc have Deployments with Services, and the Ingress routes the feed API to web", () => {
  for (const name of ["web", "imgproc"]) {
    const [c] = k8sContainersOf(processNamed(name), containers);
    assert.equal(c?.kind, "Deployment", `${name} runs in a Deployment`);
    const labels = podLabels(doc("Deployment", c.workload.split("/")[1]));
    const services = docs.filter((d) =>
      d.doc.kind === "Service" && selects(d.doc.spec.selector ?? {}, labels)
    );
    assert.ok(services.length >= 1, `no Service selects ${name}'s Pods`);
  }
  const ingress = doc("Ingress", "wharf");
  const paths = ingress.spec.rules.flatMap((r: { http: { paths: { path: string; backend: unknown }[] } }) =>
    r.http.paths
  );
  for (const p of ["/", "/api/users", "/api/feeds"]) {
    const route = paths.find((x: { path: string }) => x.path === p);
    assert.equal(route?.backend.service.name, "wharf-web", `Ingress path ${p}`);
  }
  assert.ok(ingress.spec.tls?.length, "the Ingress terminates TLS");
});

Deno.test("the Postgres StatefulSet's entrypoint is the discovery worker, with peers found on a headless Service", () => {
  const [c] = k8sContainersOf(processNamed("discovery"), containers);
  assert.equal(c?.kind, "StatefulSet");
  const set = doc("StatefulSet", c.workload.split("/")[1]);
  assert.ok(set.spec.replicas >= 3, "three members for a quorum");
  assert.equal(set.spec.podManagementPolicy, "Parallel", "etcd's first quorum needs every member up");
  assert.match(c.container.image, /^wharf-postgres/);
  const headless = doc("Service", set.spec.serviceName);
  assert.equal(headless.spec.clusterIP, "None");
  assert.equal(headless.spec.publishNotReadyAddresses, true);
  assert.ok(set.spec.volumeClaimTemplates?.length, "members keep their data on volumes");
});

Deno.test("every wharf container has /healthz probes on its port, resource requests and a locked-down context", () => {
  const problems: string[] = [];
  for (const p of PROCESSES.filter((x) => x.targets.includes("k8s"))) {
    const found = k8sContainersOf(p, containers);
    if (!found.length) problems.push(`${p.name}: no container runs /app/${binaryName(p)}`);
    for (const { workload, podSpec, container: c } of found) {
      const at = `${p.name} (${workload})`;
      if (!c.resources?.requests?.cpu || !c.resources?.requests?.memory) {
        problems.push(`${at}: resource requests`);
      }
      if (!c.resources?.limits?.memory) problems.push(`${at}: memory limit`);
      if (podSpec.securityContext?.runAsNonRoot !== true) problems.push(`${at}: runAsNonRoot`);
      if (c.securityContext?.allowPrivilegeEscalation !== false) {
        problems.push(`${at}: allowPrivilegeEscalation`);
      }
      if (c.securityContext?.readOnlyRootFilesystem !== true) problems.push(`${at}: readOnlyRootFilesystem`);
      if (!c.securityContext?.capabilities?.drop?.includes("ALL")) {
        problems.push(`${at}: capabilities not dropped`);
      }
      if (!c.volumeMounts?.some((m: { mountPath: string }) => m.mountPath === "/tmp")) {
        problems.push(`${at}: no writable /tmp under the read-only root`);
      }
      if (p.kind === "job") continue;
      const portOf = (ref: string | number) =>
        typeof ref === "number" ? ref : c.ports?.find((x: { name: string }) => x.name === ref)?.containerPort;
      const live = c.livenessProbe?.httpGet;
      if (live?.path !== "/healthz") problems.push(`${at}: liveness probe is not on /healthz`);
      else if (portOf(live.port) !== p.port) problems.push(`${at}: liveness probe port is not ${p.port}`);
      if (!c.readinessProbe) problems.push(`${at}: no readiness probe`);
      const portVar = c.env?.find((e: { name: string }) => e.name === p.portVar);
      if (portVar?.value !== String(p.port)) problems.push(`${at}: ${p.portVar} is not set to ${p.port}`);
    }
  }
  assert.deepEqual(problems, []);
});

Deno.test("no credential is in a ConfigMap and every credential a container gets comes from a Secret", () => {
  assert.deepEqual(configMapCredentials(docs), []);
  const problems = containers.flatMap((c) => k8sProvided(c, docs).problems);
  assert.deepEqual(problems, []);
  // Every Secret the manifests refer to is in the example, with placeholders only.
  for (const d of docs.filter((x) => x.doc.kind === "Secret")) {
    assert.equal(d.file, "secrets.example.yaml", `Secret ${d.doc.metadata.name} outside the example file`);
    for (const [k, v] of Object.entries(d.doc.stringData ?? {})) {
      assert.match(String(v), /CHANGE_ME/, `Secret ${d.doc.metadata.name} ${k} holds a placeholder`);
    }
  }
});

Deno.test("the credential checks catch a password in a ConfigMap and a literal credential in a container", () => {
  const planted: K8sDoc[] = [
    ...docs,
    {
      file: "planted.yaml",
      doc: {
        kind: "ConfigMap",
        metadata: { name: "x" },
        data: { OTHER_URL: "postgres://u:hunter2@db/x", JWT_SECRET: "x" },
      },
    },
  ];
  assert.deepEqual(configMapCredentials(planted), [
    "planted.yaml ConfigMap x: OTHER_URL",
    "planted.yaml ConfigMap x: JWT_SECRET",
  ]);
  const [web] = k8sContainersOf(processNamed("web"), containers);
  const leaky = structuredClone(web);
  leaky.container.env.push({ name: "POSTGRES_SUPERUSER_PASSWORD", value: "hunter2" });
  leaky.container.env.push({ name: "X", valueFrom: { secretKeyRef: { name: "wharf-web", key: "NOPE" } } });
  const problems = k8sProvided(leaky, docs).problems.join("\n");
  assert.match(problems, /POSTGRES_SUPERUSER_PASSWORD is a literal value/);
  assert.match(problems, /key NOPE of Secret wharf-web, which it lacks/);
  assert.ok(
    isCredentialName("pcred") && isCredentialName("S3_SECRET_ACCESS_KEY") && !isCredentialName("OPS_PORT"),
  );
  assert.ok(hasLiteralPassword("redis://:pw@h:1") && !hasLiteralPassword("redis://:${REDIS_PASSWORD}@h:1"));
});

Deno.test("compose.yaml validates against the Compose Specification schema, and a broken one does not", () => {
  assert.deepEqual(validateCompose(compose), []);
  const broken = structuredClone(compose);
  broken.services.web.environmant = {};
  broken.services.web.ports = "8000";
  const problems = validateCompose(broken).join("\n");
  assert.match(problems, /environmant/);
  assert.match(problems, /\/services\/web\/ports must be array/);
});

Deno.test("compose.yaml interpolates every credential and env.example names every variable it requires", async () => {
  assert.deepEqual(composeCredentialProblems(compose), []);
  const required = composeRequiredVariables(await Deno.readTextFile(join(DEPLOY, "compose.yaml")));
  const example = parseEnvFile(await Deno.readTextFile(join(DEPLOY, "env.example")));
  assert.deepEqual([...required].filter((n) => !(n in example)), []);
  for (const [k, v] of Object.entries(example)) if (isCredentialName(k)) assert.match(v, /CHANGE_ME/, k);
  const leaky = structuredClone(compose);
  leaky.services.web.environment.DATABASE_URL = "postgres://wharf:hunter2@postgres/wharf";
  assert.equal(composeCredentialProblems(leaky).length, 1);
});

Deno.test("compose runs hydrate in Redis's network namespace, dispatch twice, every process with its port", () => {
  const [[, hydrate]] = composeServicesOf(processNamed("hydrate"), compose);
  assert.equal(hydrate.network_mode, "service:redis");
  assert.match(composeEnvironment(hydrate).REDIS_URL, /@127\.0\.0\.1:6379\//);
  const [[, dispatch]] = composeServicesOf(processNamed("dispatch"), compose);
  assert.ok(dispatch.deploy.replicas >= 2);
  for (const p of PROCESSES.filter((x) => x.targets.includes("compose"))) {
    const services = composeServicesOf(p, compose);
    assert.ok(services.length, `no compose service runs ${binaryName(p)}`);
    for (const [name, s] of services) {
      if (p.kind === "service") {
        assert.equal(composeEnvironment(s)[p.portVar!], String(p.port), `${name} port`);
      }
      if (!["migrate", "discovery", "gateway"].includes(p.name)) {
        assert.equal(
          s.depends_on?.migrate?.condition,
          "service_completed_successfully",
          `${name} waits for migrate`,
        );
      }
    }
  }
});

Deno.test("every process has a systemd unit with the keys a service needs", () => {
  const problems: string[] = [];
  for (const p of PROCESSES.filter((x) => x.targets.includes("systemd"))) {
    const found = unitOf(p, units);
    if (!found) {
      problems.push(`${p.name}: no unit`);
      continue;
    }
    const [name, u] = found;
    const need = (section: string, key: string, value?: RegExp) => {
      const v = u[section]?.[key];
      if (!v?.length) problems.push(`${name}: [${section}] ${key} missing`);
      else if (value && !v.some((x) => value.test(x))) {
        problems.push(`${name}: [${section}] ${key}=${v} !~ ${value}`);
      }
    };
    need("Unit", "Description");
    need("Unit", "After", /network-online\.target/);
    need("Service", "ExecStart", new RegExp(`^/opt/wharf/bin/${binaryName(p)}$`));
    need("Service", "EnvironmentFile", /^\/etc\/wharf\/wharf\.env$/);
    need("Service", "NoNewPrivileges", /^yes$/);
    need("Service", "ProtectSystem", /^strict$/);
    need("Install", "WantedBy", /multi-user\.target/);
    if (!u.Service?.DynamicUser && !u.Service?.User) {
      problems.push(`${name}: runs as root (no User/DynamicUser)`);
    }
    if (u.Service?.MemoryDenyWriteExecute?.includes("yes")) problems.push(`${name}: V8 needs W+X memory`);
    if (p.kind === "job") need("Service", "Type", /^oneshot$/);
    else {
      need("Service", "Type", /^(exec|simple|notify)$/);
      need("Service", "Restart", /^(on-failure|always)$/);
      need("Service", "TimeoutStopSec");
      need("Service", "Environment", new RegExp(`^${p.portVar}=${p.port}$`));
    }
  }
  assert.deepEqual(problems, []);
});

Deno.test("systemd units keep credentials out of the unit files, and the example env files hold placeholders", async () => {
  const problems: string[] = [];
  for (const [name, u] of units) problems.push(...(await unitProvided(name, u)).problems);
  assert.deepEqual(problems, []);
  for (const e of Deno.readDirSync(join(DEPLOY, "systemd", "env"))) {
    const env = parseEnvFile(await Deno.readTextFile(join(DEPLOY, "systemd", "env", e.name)));
    for (const [k, v] of Object.entries(env)) {
      if (isCredentialName(k)) {
        assert.ok(e.name.endsWith(".example"), `${e.name} holds credential ${k}: name it .example`);
        assert.match(v, /CHANGE_ME/, `${e.name} ${k}`);
      }
    }
  }
});

Deno.test("every variable each process reads is provided by each of its deployments", async () => {
  const results = await coverage();
  const lines: string[] = [];
  for (const r of results) {
    for (const a of r.absent) lines.push(`${r.process.name}: ${a}`);
    for (const p of r.problems) lines.push(`${r.process.name}: ${p}`);
    for (const g of r.gaps) lines.push(`${g.process} in ${g.where} lacks ${g.missing.join(", ")}`);
  }
  assert.deepEqual(
    lines,
    [],
    "set each variable in the file named, or list it in `unset` of deploy/processes.ts with the reason " +
      "(`deno task deploy:env` prints the same list)",
  );
  const checked = results.filter((r) => r.sourcePresent).map((r) => r.process.name);
  for (const name of ["web", "dispatch", "migrate"]) assert.ok(checked.includes(name), `${name} was checked`);
  assert.ok(results.find((r) => r.process.name === "dispatch")!.reads.includes("DATABASE_URL"));
});

Deno.test("the coverage check names a variable the source reads that a deployment does not give", async () => {
  const dispatch = processNamed("dispatch");
  const [c] = k8sContainersOf(dispatch, containers);
  const provided = k8sProvided(c, docs).names;
  const reads = (await coverage([dispatch]))[0].reads;
  assert.ok(reads.includes("DATABASE_URL"));
  // Whatever the deployment lacks today (the test above wants nothing), a planted read adds exactly itself.
  const base = missingVariables(dispatch, reads, provided);
  const planted = "WHARF_PLANTED_KNOB";
  assert.deepEqual(missingVariables(dispatch, [...reads, planted], provided), [...base, planted].sort());
  // A variable taken out of the manifest is named.
  const stripped = structuredClone(c);
  stripped.container.env = stripped.container.env.filter((e: { name: string }) => e.name !== "DATABASE_URL");
  assert.deepEqual(
    missingVariables(dispatch, reads, k8sProvided(stripped, docs).names),
    [...new Set([...base, "DATABASE_URL"])].sort(),
  );
  // A variable left unset on purpose is not reported; the planted one still is.
  const [leftUnset] = Object.keys(dispatch.unset);
  assert.ok(!provided.has(leftUnset));
  assert.deepEqual(missingVariables(dispatch, [leftUnset, planted], provided), [planted]);
});

Deno.test("the cluster members' Patroni configuration allows logical decoding, which replicate needs", () => {
  const c = patroniConfig({
    scope: "wharf",
    self: "10.0.0.1",
    members: ["10.0.0.1"],
    host: { postgres: 5432, api: 8008, etcdClient: 2379, etcdPeer: 2380 },
    listen: { postgres: 5432, api: 8008, etcdClient: 2379, etcdPeer: 2380 },
    listenHost: "0.0.0.0",
    dataDir: "/data",
    timing: { ttl: 10, loop_wait: 2, retry_timeout: 4 },
    superuser: { username: "postgres", password: "x" },
    replication: { username: "replicator", password: "x" },
    restApi: { username: "patroni", password: "x" },
    binDir: "/usr/lib/postgresql/15/bin",
  }) as { bootstrap: { dcs: { postgresql: { parameters: Record<string, unknown> } } } };
  const params = c.bootstrap.dcs.postgresql.parameters;
  assert.equal(params.wal_level, "logical");
  assert.ok(Number(params.max_replication_slots) >= 2, "room for the members' slots and replicate's");
});
