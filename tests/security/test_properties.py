"""Client properties files, Java names, redaction, and where the brokers and properties come from.

No broker: the properties are checked by librdkafka building a client that connects nowhere;
the brokers a command picked are read from its "could not reach" error on a closed port.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sluice import App
from sluice.cli._common import ConnectionArgs
from sluice.cli.main import cli
from sluice.errors import ConfigError
from sluice.kafka.config import ConnectionLayer, environment_layer, resolve_connection
from sluice.kafka.properties import load_properties, parse_properties, redact, scrub, to_librdkafka

SECRET = "pa55-w0rd-that-must-not-show"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    monkeypatch.delenv("SLUICE_BROKERS", raising=False)
    monkeypatch.delenv("SLUICE_KAFKA_CONFIG", raising=False)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------- the file format


def test_a_java_properties_file_is_parsed_as_kafka_tools_read_it(tmp_path):
    path = write(
        tmp_path,
        "client.properties",
        "# a comment\n"
        "! another comment\n"
        "\n"
        "bootstrap.servers = 127.0.0.1:9094\n"
        "   security.protocol=SASL_SSL\n"
        "sasl.mechanism: SCRAM-SHA-512\n"
        "sasl.username=app\\\n"
        "    -user\n"
        "sasl.password=a=b\\:c\\u0041\n"
        "ssl.ca.location=/etc/ca.pem\n"
        "ssl.ca.location=/etc/other-ca.pem\n",
    )
    assert load_properties(path) == {
        "bootstrap.servers": "127.0.0.1:9094",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "app-user",
        "sasl.password": "a=b:cA",
        "ssl.ca.location": "/etc/other-ca.pem",
    }


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("security.protocol=SSL\n\nsecurity.protocol SASL_SSL\n", 3, "is not key=value"),
        ("# header\n=value\n", 2, "property name before '=' is empty"),
        ("a=1\nb=\\u12\n", 2, "malformed \\u escape"),
    ],
)
def test_a_malformed_line_is_reported_with_the_file_name_and_line_number(tmp_path, text, line, says):
    path = write(tmp_path, "broken.properties", text)
    with pytest.raises(ConfigError) as info:
        load_properties(path)
    assert f"{path} line {line}: " in str(info.value)
    assert says in str(info.value)


def test_a_malformed_secret_line_does_not_show_the_secret():
    with pytest.raises(ConfigError) as info:
        parse_properties(f"sasl.password {SECRET}\n", "client.properties")
    assert SECRET not in str(info.value)
    assert "client.properties line 1" in str(info.value)


def test_a_missing_or_directory_file_is_a_config_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"'.*nope\.properties' does not exist"):
        load_properties(tmp_path / "nope.properties")
    with pytest.raises(ConfigError, match="is a directory"):
        load_properties(tmp_path)


def test_java_client_names_are_translated_or_refused_with_the_librdkafka_name():
    jaas = 'org.apache.kafka.common.security.plain.PlainLoginModule required username="app" password="p\\"w";'
    assert to_librdkafka(
        {
            "sasl.jaas.config": jaas,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": "/ca.pem",
            "ssl.endpoint.identification.algorithm": "",
        },
        "f",
    ) == {
        "sasl.username": "app",
        "sasl.password": 'p"w',
        "ssl.ca.location": "/ca.pem",
        "ssl.endpoint.identification.algorithm": "none",
    }
    with pytest.raises(ConfigError, match=r"JKS truststore.*ssl\.ca\.location"):
        to_librdkafka({"ssl.truststore.location": "/trust.jks"}, "f")
    with pytest.raises(ConfigError, match="Java login module"):
        to_librdkafka({"sasl.jaas.config": "com.sun.security.auth.module.Krb5LoginModule required;"}, "f")
    with pytest.raises(ConfigError, match=r"ssl\.truststore\.password is a Java client property"):
        to_librdkafka({"ssl.truststore.password": "x"}, "f")


# ---------------------------------------------------------------------- secrets


def test_secrets_are_redacted_in_reprs_and_error_texts():
    props = {
        "sasl.username": "app",
        "sasl.password": SECRET,
        "ssl.key.password": SECRET + "1",
        "ssl.keystore.password": SECRET + "2",
        "sasl.oauthbearer.client.secret": SECRET + "3",
        "ssl.key.pem": SECRET + "4",
    }
    shown = redact(props)
    assert shown["sasl.username"] == "app"
    assert SECRET not in repr(shown)
    app = App("redacted", brokers="127.0.0.1:9094", kafka_config=props)
    assert SECRET not in repr(app.settings)
    assert app.settings.producer_config()["sasl.password"] == SECRET  # the clients do get it
    assert SECRET not in repr(ConnectionLayer("b:1", props))
    assert SECRET not in repr(ConnectionArgs(None, None).resolve(ConnectionLayer("b:1", props)))
    assert scrub(f"login failed for {SECRET}", props) == "login failed for [redacted]"


def test_a_property_librdkafka_refuses_is_a_config_error_at_app_creation():
    with pytest.raises(ConfigError, match=r'kafka_config was refused by librdkafka: .*"sasl\.mechanismz"'):
        App("bad", kafka_config={"sasl.mechanismz": "PLAIN"})
    with pytest.raises(ConfigError, match="enable_auto_commit=True is refused"):
        App("bad", kafka_config={"enable.auto.commit": "true"})


# ---------------------------------------------------------------------- precedence


def test_every_client_of_an_app_gets_kafka_config():
    app = App(
        "every",
        brokers="127.0.0.1:9094",
        kafka_config={
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "app",
            "sasl.password": SECRET,
        },
    )
    configs = [
        app.settings.consumer_config(),
        app.settings.producer_config(),
        app.settings.admin_config(),
        app.settings.restore_consumer_config(),
    ]
    assert all(
        c["security.protocol"] == "SASL_SSL" and c["bootstrap.servers"] == "127.0.0.1:9094" for c in configs
    )
    # client-specific overrides still win for their client only
    tuned = App(
        "tuned", kafka_config={"socket.timeout.ms": 1000}, consumer_config={"socket.timeout.ms": 2000}
    )
    assert tuned.settings.consumer_config()["socket.timeout.ms"] == 2000
    assert tuned.settings.producer_config()["socket.timeout.ms"] == 1000


def test_precedence_is_argument_then_code_then_environment_then_default(tmp_path, monkeypatch):
    env_file = write(
        tmp_path,
        "env.properties",
        "bootstrap.servers=file-env:9092\nsocket.timeout.ms=1111\nclient.rack=env\n",
    )
    cli_file = write(tmp_path, "cli.properties", "client.rack=cli\n")

    assert App("d").brokers == "127.0.0.1:9092"  # default
    monkeypatch.setenv("SLUICE_KAFKA_CONFIG", str(env_file))
    app = App("e")
    assert app.brokers == "file-env:9092"
    assert app.settings.kafka_config == {"socket.timeout.ms": "1111", "client.rack": "env"}
    monkeypatch.setenv("SLUICE_BROKERS", "env:9092")
    assert App("e").brokers == "env:9092"  # $SLUICE_BROKERS over the bootstrap.servers of the env file

    app = App("c", brokers="code:9092", kafka_config={"client.rack": "code"})
    assert app.brokers == "code:9092"
    assert app.settings.kafka_config == {"socket.timeout.ms": "1111", "client.rack": "code"}
    assert App("c2", kafka_config={"bootstrap.servers": "code-props:9092"}).brokers == "code-props:9092"

    app.override_kafka(None, load_properties(cli_file))  # what sluice run --config does
    assert app.brokers == "code:9092"
    assert app.settings.kafka_config == {"socket.timeout.ms": "1111", "client.rack": "cli"}
    app.override_kafka("cli:9092")
    assert app.brokers == "cli:9092"

    conn = ConnectionArgs(None, str(cli_file)).resolve()
    assert (conn.brokers, conn.properties["client.rack"]) == ("env:9092", "cli")
    assert ConnectionArgs("arg:9092", None).resolve(ConnectionLayer("code:9092")).brokers == "arg:9092"


def test_resolve_connection_takes_brokers_from_the_highest_level_that_gives_them():
    brokers, props = resolve_connection(
        ConnectionLayer(None, {"a.b": "1"}),
        ConnectionLayer(None, {"bootstrap.servers": "props:1", "a.b": "2", "c.d": "3"}),
        ConnectionLayer("env:1"),
    )
    assert (brokers, props) == ("props:1", {"a.b": "1", "c.d": "3"})
    assert resolve_connection(ConnectionLayer(), default="dflt:1") == ("dflt:1", {})


def test_a_missing_environment_file_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist.*\(from \$SLUICE_KAFKA_CONFIG\)"):
        environment_layer({"SLUICE_KAFKA_CONFIG": str(tmp_path / "gone.properties")})


# ---------------------------------------------------------------------- the command line


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, list(args), env={"COLUMNS": "200", **(env or {})})


@pytest.mark.parametrize(
    "command", [["lag", "--group", "g"], ["dlq", "inspect", "t"], ["tail", "t"], ["produce", "t"]]
)
def test_every_tool_reports_a_missing_or_malformed_config_file_in_one_line(tmp_path, command):
    result = invoke(*command, "--config", str(tmp_path / "missing.properties"))
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        f"sluice: error: Kafka client properties file '{tmp_path / 'missing.properties'}' does not exist; "
        "give the path of a key=value file (as Kafka's tools take with --command-config)"
    )
    bad = write(tmp_path, "bad.properties", "security.protocol=SSL\noops\n")
    result = invoke(*command, "--config", str(bad))
    assert result.exit_code == 1
    assert f"{bad} line 2: 'oops' is not key=value" in result.stderr


def test_the_command_line_brokers_win_over_the_config_file_and_the_environment(tmp_path):
    # port 1 on loopback refuses at once: the error names the brokers the command picked
    conf = write(tmp_path, "c.properties", "bootstrap.servers=127.0.0.1:2\n")
    env = {"SLUICE_BROKERS": "127.0.0.1:3"}
    picked = {
        ("--brokers", "127.0.0.1:1", "--config", str(conf)): "127.0.0.1:1",
        ("--config", str(conf)): "127.0.0.1:2",
        (): "127.0.0.1:3",
    }
    for args, brokers in picked.items():
        result = invoke("lag", "--group", "g", "--timeout", "0.5", *args, env=env)
        assert result.exit_code == 1, result.output
        assert f"could not reach Kafka at {brokers} within" in result.stderr, (args, result.stderr)


def test_sluice_run_reports_a_missing_config_file_before_connecting(tmp_path, monkeypatch):
    module = write(tmp_path, "secure_run_app.py", "from sluice import App\napp = App('r')\n")
    monkeypatch.chdir(module.parent)
    result = invoke("run", "secure_run_app:app", "--config", str(tmp_path / "nope.properties"))
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("sluice: error: Kafka client properties file")
    assert "nope.properties' does not exist" in result.stderr
