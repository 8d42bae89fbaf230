import org.codelibs.opensearch.runner.OpenSearchRunner;

/**
 * One OpenSearch node for tests, through codelibs' runner, with what the runner's own main does not
 * set: the ingest role (pipelines are part of what migrations manage), single-node discovery and a
 * cluster name of the caller's choosing (two checkouts on one machine must never join each other's
 * cluster), and no disk watermarks (a nearly full CI disk must not turn test indices read-only).
 *
 *   java -cp "lib/*:classes" OpenSearchNode BASE_PATH BASE_HTTP_PORT CLUSTER_NAME
 */
public final class OpenSearchNode {
    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: OpenSearchNode BASE_PATH BASE_HTTP_PORT CLUSTER_NAME");
            System.exit(2);
        }
        OpenSearchRunner runner = new OpenSearchRunner();
        runner.onBuild((number, settings) -> {
            settings.putList("node.roles", "cluster_manager", "data", "ingest");
            settings.put("cluster.routing.allocation.disk.threshold_enabled", false);
        }).build(OpenSearchRunner.newConfigs().basePath(args[0]).numOfNode(1)
                .baseHttpPort(Integer.parseInt(args[1])).clusterName(args[2]));
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (Exception e) {
                // stopping anyway
            }
        }));
        Thread.currentThread().join();
    }
}
