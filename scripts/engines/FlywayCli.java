import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;

import org.flywaydb.core.Flyway;
import org.flywaydb.core.api.MigrationInfo;
import org.flywaydb.core.api.output.ValidateResult;

/**
 * The few Flyway commands the adoption tests need, with flyway-commandline's argument style
 * ({@code -url=… -user=… -locations=filesystem:DIR -table=…}), since that module is not
 * resolvable from Maven Central alone. Output is line-oriented so tests can read it.
 *
 *   java -cp "$POLYMIGRATE_FLYWAY_CP" FlywayCli migrate|validate|info|repair|baseline -url=jdbc:postgresql://… [-key=value …]
 */
public final class FlywayCli {
    public static void main(String[] args) {
        if (args.length < 1) {
            System.err.println("usage: FlywayCli migrate|validate|info|repair|baseline -url=… [-user=…] [-locations=…]");
            System.exit(2);
        }
        Map<String, String> conf = new HashMap<>();
        for (String a : Arrays.copyOfRange(args, 1, args.length)) {
            if (!a.startsWith("-") || !a.contains("=")) {
                System.err.println("argument must look like -key=value: " + a);
                System.exit(2);
            }
            String key = a.substring(1, a.indexOf('='));
            conf.put(key.startsWith("flyway.") ? key : "flyway." + key, a.substring(a.indexOf('=') + 1));
        }
        conf.putIfAbsent("flyway.cleanDisabled", "true");
        Flyway flyway = Flyway.configure().configuration(conf).load();
        try {
            switch (args[0]) {
                case "migrate" -> System.out.println("migrated " + flyway.migrate().migrationsExecuted);
                case "validate" -> {
                    ValidateResult r = flyway.validateWithResult();
                    System.out.println("validate " + (r.validationSuccessful ? "ok" : "failed"));
                    if (!r.validationSuccessful) {
                        r.invalidMigrations.forEach(m -> System.out.println("invalid " + m.version + " " + m.filepath + " " + m.errorDetails.errorMessage));
                        System.exit(1);
                    }
                }
                case "info" -> {
                    for (MigrationInfo i : flyway.info().all()) {
                        System.out.println("info\t" + (i.getVersion() == null ? "" : i.getVersion().getVersion()) + "\t"
                                + i.getDescription() + "\t" + i.getState().getDisplayName() + "\t" + i.getChecksum());
                    }
                }
                case "repair" -> System.out.println("repaired " + flyway.repair().repairActions);
                case "baseline" -> System.out.println("baseline " + flyway.baseline().successfullyBaselined);
                default -> {
                    System.err.println("unknown command " + args[0]);
                    System.exit(2);
                }
            }
        } catch (RuntimeException e) {
            System.out.println("error " + e.getMessage().replace('\n', ' '));
            System.exit(1);
        }
    }
}
