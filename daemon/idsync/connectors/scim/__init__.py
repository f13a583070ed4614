"""The SCIM connector."""
