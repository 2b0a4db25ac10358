"""The MCP server: tools over the core, their inputs and text renderings, progress, and the
``lazarus-mcp`` entry point."""
