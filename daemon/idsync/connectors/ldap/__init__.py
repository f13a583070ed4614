"""The LDAP connector."""
