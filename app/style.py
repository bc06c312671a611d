"""The app's look: one small style sheet on top of the platform style."""

STYLE = """
QLabel#title { font-size: 24px; font-weight: 600; }
QLabel#hint { color: #5f6670; }
QLabel#statValue { font-size: 22px; font-weight: 600; }
QFrame#card { background: palette(base); border: 1px solid #dcdfe4; border-radius: 10px; }
QPushButton { padding: 6px 14px; border-radius: 6px; }
QPushButton#primary { background: #2f6fdf; color: white; border: none; font-weight: 600; }
QPushButton#primary:disabled { background: #9db7e8; }
QPushButton#hero { background: #2f6fdf; color: white; border: none; font-size: 17px; font-weight: 600;
                   padding: 12px 28px; border-radius: 8px; }
QPushButton#hero:disabled { background: #7fa3e6; }
QListWidget#nav { border: none; outline: 0; background: #eef0f3; font-size: 15px; padding-top: 12px; }
QListWidget#nav::item { padding: 10px 16px; border-radius: 6px; margin: 2px 8px; color: #222; }
QListWidget#nav::item:selected { background: #2f6fdf; color: white; }
"""
