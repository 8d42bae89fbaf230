import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;

import org.flywaydb.core.Flyway;
import org.flywaydb.core.api.MigrationInfo;
import org.flywaydb.core.api.output.ValidateResult;

/**
 * The few Flyway commands the adoption tests need, with flyway-commandline's argument style
 * ({@code -url=… -user=… -locations=filesystem:DIR -table=… -placeholders.NAME=…}), since that
 * module is not resolvable from Maven Central alone. Output is line-oriented so tests can read it.
 * Several commands separated by commas run in one JVM (a JVM start costs seconds on a busy machine);
 * each runs even if an earlier one failed, and the exit status is 1 if any failed.
 *
 *   java -cp "$POLYMIGRATE_FLYWAY_CP" FlywayCli validate,info,migrate -url=jdbc:postgresql://… [-key=value …]
 *
 * Lines: {@code migrated N}, {@code validate ok|failed}, {@code invalid VERSION SCRIPT MESSAGE},
 * {@code info<TAB>version<TAB>description<TAB>type<TAB>state<TAB>checksum<TAB>script},
 * {@code repaired [...]}, {@code baseline true|false}, {@code error COMMAND MESSAGE}.
 */
public final class FlywayCli {
    public static void main(String[] args) {
        if (args.length < 1) {
            System.err.println("usage: FlywayCli migrate|validate|info|repair|baseline[,…] -url=… [-user=…] [-locations=…]");
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
        boolean failed = false;
        for (String command : args[0].split(",")) {
            try {
                failed |= !run(flyway, command);
            } catch (RuntimeException e) {
                System.out.println("error " + command + " " + String.valueOf(e.getMessage()).replace('\n', ' '));
                failed = true;
            }
            System.out.flush();
        }
        System.exit(failed ? 1 : 0);
    }

    private static boolean run(Flyway flyway, String command) {
        switch (command) {
            case "migrate" -> System.out.println("migrated " + flyway.migrate().migrationsExecuted);
            case "validate" -> {
                ValidateResult r = flyway.validateWithResult();
                System.out.println("validate " + (r.validationSuccessful ? "ok" : "failed"));
                if (!r.validationSuccessful) {
                    r.invalidMigrations.forEach(m -> System.out.println("invalid " + m.version + " " + m.filepath + " "
                            + String.valueOf(m.errorDetails.errorMessage).replace('\n', ' ')));
                    return false;
                }
            }
            case "info" -> {
                for (MigrationInfo i : flyway.info().all()) {
                    System.out.println("info\t" + (i.getVersion() == null ? "" : i.getVersion().getVersion()) + "\t"
                            + i.getDescription() + "\t" + i.getType() + "\t" + i.getState().getDisplayName() + "\t"
                            + i.getChecksum() + "\t" + i.getScript());
                }
            }
            case "repair" -> System.out.println("repaired " + flyway.repair().repairActions);
            case "baseline" -> System.out.println("baseline " + flyway.baseline().successfullyBaselined);
            default -> {
                System.out.println("error " + command + " unknown command");
                return false;
            }
        }
        return true;
    }
}
