"""Who may do what: single-user mode, or a public deployment guarded by an admin secret.

The rule, decided here without Streamlit so that it can be tested directly:

- no admin secret configured: single-user mode; whoever opens the app may do everything, and
  the History page shows every stored prediction;
- an admin secret configured (Streamlit secret `admin_secret`, else the environment variable
  `DERMO_ADMIN_SECRET`): public mode; anyone may predict and sees the predictions of their own
  browser session only; training, dataset uploads, activating or deleting runs and reading,
  exporting or deleting other sessions' history need the secret.
"""

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

SECRET_NAME = "admin_secret"
SECRET_VARIABLE = "DERMO_ADMIN_SECRET"
SINGLE_USER = "single-user"
PUBLIC = "public"


def configured_secret(
    secrets_value: object = None, environment: Mapping[str, str] = os.environ
) -> str | None:
    """The admin secret: the Streamlit secret when set, else the environment variable.

    Blank values count as not configured, so an empty placeholder never locks anyone out.
    Surrounding whitespace is dropped: `export` from a file or a secrets editor often keeps a
    newline that no one can type into the one-line secret box.
    """
    for value in (secrets_value, environment.get(SECRET_VARIABLE)):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


@dataclass(frozen=True)
class Access:
    """The access rule of this deployment; `secret` never appears in a repr or a log."""

    secret: str | None = field(default=None, repr=False)

    @property
    def mode(self) -> str:
        return PUBLIC if self.secret else SINGLE_USER

    @property
    def public(self) -> bool:
        return self.mode == PUBLIC

    def unlocks(self, attempt: str | None) -> bool:
        """Whether `attempt` is the admin secret (compared in constant time)."""
        if not self.public:
            return True
        if not attempt or not self.secret:
            return False
        return hmac.compare_digest(attempt.encode("utf-8"), self.secret.encode("utf-8"))

    def is_admin(self, unlocked: bool) -> bool:
        """Admin actions are open in single-user mode, and to unlocked sessions in public mode."""
        return not self.public or unlocked

    def history_session(self, session_id: str, unlocked: bool) -> str | None:
        """The session whose history a visitor may see; None means every session."""
        return None if self.is_admin(unlocked) else session_id


def access_for(secret: str | None) -> Access:
    """The access rule for a configured secret (None or blank: single-user mode)."""
    return Access(configured_secret(secret, {}))
