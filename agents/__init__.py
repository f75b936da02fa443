"""The Faust application: built by :func:`agents.app.create_app`, never a module-level global."""
