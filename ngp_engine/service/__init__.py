"""The engine as a service: the JSON-lines protocol and client (standard library only, the
add-on imports both inside Blender), the Session every front end drives, and the server."""
