"""What every hook of the provider has: one connection, read through its type's settings model."""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any, ClassVar, Self

from airflow.providers.common.compat.sdk import BaseHook

from strm_provider.connection_settings import ConnectionSettings, SettingsError
from strm_provider.connection_types import OWN_TYPES
from strm_provider.version_compat import AIRFLOW_V_3_0_PLUS


class ConnectionHook(BaseHook):
    """A hook over one connection; :attr:`settings` is the connection as ``settings_class`` parses it."""

    settings_class: ClassVar[type[ConnectionSettings]] = ConnectionSettings

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Gives each of the provider's own connection types its form (:meth:`form_widgets`).

        Airflow reads a hook's form only from methods the class itself defines (``vars(cls)``, never an
        inherited one, so that a hierarchy adds its fields once), so each hook of a type in
        :data:`~strm_provider.connection_types.OWN_TYPES` gets the two methods here; the official providers'
        types (``aws``...) keep their own providers' forms.
        """
        super().__init_subclass__(**kwargs)
        if vars(cls).get("conn_type") in OWN_TYPES:
            cls.get_connection_form_widgets = classmethod(form_widgets)  # type: ignore[assignment]
            cls.get_ui_field_behaviour = classmethod(field_behaviour)  # type: ignore[assignment]

    @property
    def connection_id(self) -> str:
        """The connection's id, whatever the subclass calls its attribute (``conn_name_attr``)."""
        return str(getattr(self, self.conn_name_attr))

    @classmethod
    def from_connection(cls, conn: Any, **kwargs: Any) -> Self:
        """A hook over a connection object that is not (yet) stored anywhere Airflow looks.

        ``strm create data-connector`` validates the credentials before it saves them, and a remote
        Airflow's connections are not readable locally; the instance's ``get_connection`` is bound to
        ``conn`` so the hook reads its fields as usual (and hands it on to an official provider's hook).
        """
        hook = cls(conn.conn_id, **kwargs)
        hook.get_connection = lambda _conn_id: conn  # type: ignore[method-assign]
        return hook

    @cached_property
    def settings(self) -> Any:
        """The connection's settings; an invalid one raises :meth:`settings_error`, naming each field."""
        try:
            return self.read_settings(self.get_connection(self.connection_id))
        except SettingsError as err:
            raise self.settings_error(str(err)) from None

    def read_settings(self, conn: Any) -> ConnectionSettings:
        """``conn`` through the settings model; a hook whose connection lacks a setting may supply it."""
        return self.settings_class.parse(conn)

    def settings_error(self, problem: str) -> Exception:
        """The exception an invalid setting raises, naming this connection."""
        return ValueError(f"connection '{self.connection_id}': {problem}")


def form_widgets(hook_class: type[ConnectionHook]) -> dict[str, Any]:
    """The connection form's extra fields as the hook declares them: wtforms fields with Flask AppBuilder
    widgets, built from the settings model's ``form()`` (label, help text, default, choices, secret-ness),
    as ``get_provider_info``'s ``conn-fields`` are.

    Airflow 2's connection form renders these; the API server of Airflow 3.0 and 3.1 calls this with wtforms
    and Flask AppBuilder replaced by stand-ins that record each field for the React form (3.0 only where
    wtforms is installed, e.g. with the FAB provider); 3.2 and later read ``conn-fields`` instead. Imported
    here, not at the top: a worker has neither package, and needs no form.
    """
    from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
    from wtforms import PasswordField, StringField
    from wtforms.validators import Optional, any_of

    fields = {}
    for name, field in hook_class.settings_class.form()["conn-fields"].items():
        schema = field["schema"]
        secret = schema.get("format") == "password"
        # Optional first: an empty field ends the checks (the settings model supplies its default)
        checks = [Optional(), any_of(schema["enum"])] if "enum" in schema else [Optional()]
        field_class, widget = (PasswordField, BS3PasswordFieldWidget) if secret else (StringField, BS3TextFieldWidget)
        fields[name] = field_class(
            field["label"],
            validators=checks,
            description=field["description"],
            default=schema.get("default"),
            widget=widget(),
        )
    return fields


def field_behaviour(hook_class: type[ConnectionHook]) -> dict[str, Any]:
    """The form's hidden, relabelled and pre-filled own fields, as ``get_provider_info``'s
    ``ui-field-behaviour`` declares them, in the hook method's spelling."""
    behaviour = hook_class.settings_class.form()["ui-field-behaviour"]
    behaviour = {key.replace("-", "_"): value for key, value in behaviour.items()}
    if not AIRFLOW_V_3_0_PLUS:
        # Airflow 2's form script reads the Extra field's editor when Test is pressed, and creates that editor
        # only for an Extra field shown as the page loads: hidden, Test fails in the browser (a script error,
        # no message) on a saved connection's page. Values in Extra merge with the fields above, which win.
        behaviour["hidden_fields"] = [name for name in behaviour["hidden_fields"] if name != "extra"]
    return behaviour


def quiet_library_log(name: str) -> None:
    """Logger ``name`` at WARNING, unless logging's configuration (Airflow's) set a level for it.

    Called where a hook builds a client: a task log tells the export's story (plan, files, summary), and
    a client library's INFO lines on every request or metadata refresh would bury it.
    """
    log = logging.getLogger(name)
    if log.level == logging.NOTSET:
        log.setLevel(logging.WARNING)
