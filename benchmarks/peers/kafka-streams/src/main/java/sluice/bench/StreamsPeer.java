package sluice.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Files;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;

/**
 * The Kafka Streams peer of the sluice benchmarks, written as the Kafka Streams docs show.
 *
 * <p>{@code java -cp target/classes:target/dependency/* sluice.bench.StreamsPeer --scenario
 * stateless|windowed|join --brokers B --input T --output O --group G --records N [--table U]}. Scenario
 * join: a KStream-KTable {@code leftJoin} of the input (keyed by user id) with the table topic U
 * (same partition count), the source topic reused as the table's changelog (topology optimization,
 * as the docs recommend); its clock starts at the first record deserialized from either topic.
 * Prints JSON lines on
 * stdout: {@code first_consumed} (System.nanoTime, the same CLOCK_MONOTONIC as Python's
 * time.monotonic) when the first record is seen, and a summary when stopped (SIGTERM from the
 * harness once the output is complete).
 */
public final class StreamsPeer {
  private static final ObjectMapper MAPPER = new ObjectMapper();

  /** JSON values as Jackson trees: the serde the Kafka Streams examples build from a mapper. */
  static final class JsonSerde implements Serde<JsonNode> {
    @Override
    public Serializer<JsonNode> serializer() {
      return (topic, node) -> {
        try {
          return node == null ? null : MAPPER.writeValueAsBytes(node);
        } catch (Exception e) {
          throw new IllegalStateException(e);
        }
      };
    }

    @Override
    public Deserializer<JsonNode> deserializer() {
      return (topic, bytes) -> {
        try {
          return bytes == null ? null : MAPPER.readTree(bytes);
        } catch (Exception e) {
          throw new IllegalStateException(e);
        }
      };
    }
  }

  private StreamsPeer() {}

  /** The kafka-streams version on the class path (from the client jar's version file). */
  static String version() {
    Properties p = new Properties();
    try (var in = KafkaStreams.class.getResourceAsStream("/kafka/kafka-version.properties")) {
      p.load(in);
    } catch (Exception e) {
      return "unknown";
    }
    return p.getProperty("version", "unknown");
  }

  static Map<String, String> parse(String[] args) {
    Map<String, String> out = new HashMap<>();
    for (int i = 0; i + 1 < args.length; i += 2) {
      out.put(args[i].replaceFirst("^--", ""), args[i + 1]);
    }
    return out;
  }

  static void report(String json) {
    synchronized (System.out) {
      System.out.println(json);
      System.out.flush();
    }
  }

  /** {@code inner}'s deserializer, reporting {@code first_consumed} for the first record it reads. */
  static Serde<JsonNode> stamping(Serde<JsonNode> inner, AtomicBoolean first) {
    Deserializer<JsonNode> read = inner.deserializer();
    return Serdes.serdeFrom(
        inner.serializer(),
        (topic, bytes) -> {
          if (first.compareAndSet(false, true)) {
            report("{\"first_consumed\": " + System.nanoTime() / 1e9 + "}");
          }
          return read.deserialize(topic, bytes);
        });
  }

  static Topology topology(
      String scenario, String input, String output, String table, AtomicLong consumed, Properties props) {
    StreamsBuilder builder = new StreamsBuilder();
    Serde<JsonNode> json = new JsonSerde();
    AtomicBoolean first = new AtomicBoolean(false);
    // join: the table is read first, so its records start the clock (deserialized as they are fetched)
    Serde<JsonNode> in = "join".equals(scenario) ? stamping(json, first) : json;
    KStream<String, JsonNode> events =
        builder.stream(input, Consumed.with(Serdes.String(), in))
            .peek(
                (k, v) -> {
                  if (first.compareAndSet(false, true)) {
                    report("{\"first_consumed\": " + System.nanoTime() / 1e9 + "}");
                  }
                  consumed.incrementAndGet();
                });
    switch (scenario) {
      case "stateless" ->
          events
              .filter((k, e) -> "click".equals(e.get("type").asText()))
              .mapValues(
                  e -> {
                    ObjectNode o = MAPPER.createObjectNode();
                    o.set("id", e.get("id"));
                    o.set("page", e.get("page"));
                    o.set("user", e.get("user"));
                    return (JsonNode) o;
                  })
              .to(output, Produced.with(Serdes.String(), json));
      case "windowed" ->
          // The input is keyed by user already: groupByKey needs no repartition topic.
          events
              .groupByKey(Grouped.with(Serdes.String(), json))
              .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofMinutes(1), Duration.ZERO))
              .count()
              .suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()))
              .toStream()
              .map(
                  (w, count) -> {
                    ObjectNode o = MAPPER.createObjectNode();
                    o.put("key", w.key());
                    o.put("start", w.window().start());
                    o.put("end", w.window().end());
                    o.put("value", count);
                    return KeyValue.pair(w.key(), (JsonNode) o);
                  })
              .to(output, Produced.with(Serdes.String(), json));
      case "join" -> {
        KTable<String, JsonNode> users = builder.table(table, Consumed.with(Serdes.String(), in));
        events
            .leftJoin(
                users,
                (order, user) -> {
                  ObjectNode o = ((ObjectNode) order).deepCopy();
                  if (user == null) {
                    o.putNull("name");
                    o.putNull("tier");
                  } else {
                    o.set("name", user.get("name"));
                    o.set("tier", user.get("tier"));
                  }
                  return (JsonNode) o;
                })
            .to(output, Produced.with(Serdes.String(), json));
      }
      default -> throw new IllegalArgumentException("unknown scenario " + scenario);
    }
    return builder.build(props);
  }

  public static void main(String[] argv) throws Exception {
    Map<String, String> args = parse(argv);
    AtomicLong consumed = new AtomicLong();
    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, args.get("group"));
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args.get("brokers"));
    props.put(
        StreamsConfig.STATE_DIR_CONFIG,
        Files.createTempDirectory("kafka-streams-peer-").toString());
    props.put(
        StreamsConfig.NUM_STREAM_THREADS_CONFIG, args.getOrDefault("threads", "1"));
    props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    if ("join".equals(args.get("scenario"))) {
      // the table's source topic doubles as its changelog: no copy of it written back
      props.put(StreamsConfig.TOPOLOGY_OPTIMIZATION_CONFIG, StreamsConfig.OPTIMIZE);
    }
    Topology topology =
        topology(
            args.get("scenario"),
            args.get("input"),
            args.get("output"),
            args.get("table"),
            consumed,
            props);
    KafkaStreams streams = new KafkaStreams(topology, props);
    CountDownLatch stopped = new CountDownLatch(1);
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  streams.close(Duration.ofSeconds(30));
                  report(
                      "{\"consumed\": "
                          + consumed.get()
                          + ", \"version\": \"kafka-streams "
                          + version()
                          + "\"}");
                  stopped.countDown();
                }));
    report("{\"version\": \"kafka-streams " + version() + "\"}");
    streams.start();
    stopped.await();
  }
}
